"""Timing for ``scripts/bench_kernels.py``: medians with a minimum number of samples, a CUDA-graph mode for short
calls, and a per-cell time limit.

* :func:`median_ms` times ``fn`` until it has at least ``min_samples`` samples and ``rep_ms`` of measuring
  (``triton.testing.do_bench`` stops after ``rep`` ms, so a call slower than ``rep`` got a "median" of one sample).
  On CUDA each sample is one call between CUDA events, the L2 cache cleared before it (as do_bench does); off CUDA
  it uses ``time.perf_counter`` (the CPU rehearsal: a crash test, not a measurement).
* :func:`graph_ms` replays ``calls`` captured calls in one CUDA graph per sample: no Python or launch overhead, so
  for calls of well under a millisecond (batch 1) it shows what the kernels themselves cost.
* :func:`cell_time_limit` raises :class:`CellTimeout` in the main thread after ``seconds`` (SIGALRM): a cell whose
  compile or measurement overruns is abandoned and recorded, and the next cell starts.

Only torch ≥ 2.0 APIs (CUDA events, ``torch.cuda.graph``): the GPU check runs on torch 2.11 / triton 3.6.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import ContextManager

import torch

from attnbench.core.deadline import time_limit

__all__ = ["median_ms", "graph_ms", "CellTimeout", "cell_time_limit"]

_L2_BYTES = 256 * 2**20  # more than any GPU's L2 (H100: 50 MiB): zeroing it evicts the previous call's data
_MAX_SAMPLES = 1000


def _flusher():
    if not torch.cuda.is_available():
        return lambda: None
    buf = torch.empty(_L2_BYTES // 4, dtype=torch.int32, device="cuda")
    return buf.zero_


def median_ms(fn, min_samples: int = 10, warmup_ms: float = 10.0, rep_ms: float = 50.0) -> tuple[float, int]:
    """(median ms per call, number of samples): ``warmup_ms`` of warm-up calls (at least one unless it is 0: the
    benchmark has called ``fn`` already), then max(``min_samples``, ``rep_ms`` / the time per call) samples, at
    most 1000."""
    cuda = torch.cuda.is_available()
    flush = _flusher()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    t0, calls = time.perf_counter(), 0
    while (calls == 0 and warmup_ms > 0) or (time.perf_counter() - t0) * 1e3 < warmup_ms:
        fn()
        sync()
        calls += 1
    per_call = max((time.perf_counter() - t0) * 1e3 / calls, 1e-3) if calls else float("inf")
    n = int(min(max(min_samples, math.ceil(rep_ms / per_call)), _MAX_SAMPLES))
    times = []
    for _ in range(n):
        flush()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), n


def graph_ms(fn, calls: int = 20, samples: int = 10) -> float:
    """Median ms per call of ``fn`` replayed from a CUDA graph holding ``calls`` calls (CUDA only; ``fn`` must
    already have run once, so autotuning and compiles are done). The L2 cache is not flushed between calls, and
    tensors ``fn`` allocates come from the graph's private pool."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graph's documentation asks
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    del graph
    return statistics.median(times)


class CellTimeout(BaseException):
    """A cell ran past its time limit. A BaseException, so that library code catching Exception (a compiler's
    fallback path) does not swallow it. (The engine's cells raise a TimeoutError through the same
    :func:`attnbench.core.deadline.time_limit`, which is standard library only: the GPU check must not import the
    engine, which needs more than torch and triton.)"""


def cell_time_limit(seconds: float | None) -> ContextManager[None]:
    """Raise :class:`CellTimeout` in this (main) thread after ``seconds``; None or 0: no limit. The signal is
    handled between Python bytecodes, so a single long CUDA call finishes first; the GPU check's per-stage
    ``timeout`` is the hard limit behind this one (:func:`attnbench.core.deadline.time_limit`)."""
    return time_limit(seconds, lambda: CellTimeout(f"killed after {seconds:g} s (--cell-timeout-s)"))
