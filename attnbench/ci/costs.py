"""The deterministic columns of a CI benchmark: FLOPs and peak memory of one call (shape-only, so gated exactly).

* ``flops``: ``torch.utils.flop_counter.FlopCounterMode`` total of one call (forward, or forward + backward, or
  the backbone step), FLOPs = 2 × multiply-adds, with attnbench's formula for CPU flash SDPA so a CPU count equals
  the CUDA one (see docs/metrics.md, ``flops_torch``; it counts matmuls, convolutions and SDPA only).
* ``mem_peak_bytes``: the peak tensor bytes held above the level before the call, by the memory metric's methods
  (:func:`attnbench.metrics.memory.cuda_peak_bytes` on CUDA, the profiler's CPU-allocator events on the CPU), one
  unmeasured call first. On the CPU the count can depend on the thread count (per-thread SDPA buffers): the gate
  runs with one thread and records it.
"""
from __future__ import annotations

from typing import Any

import torch

from ..metrics._cpu_memory import METHOD as CPU_METHOD
from ..metrics._cpu_memory import cpu_peak_bytes
from ..metrics.flops import _torch_custom_mapping
from ..metrics.memory import CUDA_METHOD, cuda_peak_bytes
from .cases import Work

__all__ = ["count_flops", "peak_memory", "deterministic_columns"]


def count_flops(work: Work) -> int:
    """FlopCounterMode FLOPs of one call of ``work`` (its injected repeats included)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_torch_custom_mapping())
    with counter:
        work()
    return int(counter.get_total_flops())


def peak_memory(work: Work) -> tuple[int, str]:
    """(peak bytes of one call above the level before it, method name); one unmeasured call runs first."""
    work()
    work.reset()

    def call() -> None:
        for _ in range(work.repeat):
            work.step()

    if work.device.type == "cuda":
        return cuda_peak_bytes(call, work.device), CUDA_METHOD
    return cpu_peak_bytes(call), CPU_METHOD


def deterministic_columns(work: Work) -> dict[str, Any]:
    """``flops``, ``mem_peak_bytes``, ``mem_method``, ``device`` and ``threads`` of ``work``."""
    mem, method = peak_memory(work)
    return {"flops": count_flops(work), "mem_peak_bytes": mem, "mem_method": method, "device": work.device.type,
            "threads": torch.get_num_threads()}
