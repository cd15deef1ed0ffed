"""Metric ``memory``: peak memory of one call of the cell's pass, above what was held before the call.

What a call is (see :mod:`attnbench.metrics._passes`): ``forward`` = inference, one forward under ``no_grad`` in
eval mode; ``forward_backward`` = one training step, forward + ``out.float().sum().backward()`` with parameter and
input gradients reset to ``None`` beforehand, so the call allocates (and is charged for) the gradients, the saved
activations and the backward temporaries. The module's weights and the input are allocated before the call and are
**not** counted; the output is (it is allocated during the call).

One untimed, unmeasured call runs first (lazy initialisation, cuBLAS workspaces, the ``torch.compile`` compile), so
the measured call is a steady-state one.

Methods (column ``mem_method``):
    cuda_max_allocated: ``torch.cuda.reset_peak_memory_stats()``, then
        ``max_memory_allocated() − memory_allocated()``-before-the-call: bytes of tensors held by the caching
        allocator, excluding its cached-but-free blocks and memory allocated outside PyTorch (cuDNN/cuBLAS
        handles, the CUDA context).
    cpu_profiler_alloc_events: see :mod:`attnbench.metrics._cpu_memory`: the peak running sum of the profiler's
        CPU-allocator ``[memory]`` events during the call.

Threads: on the CPU the peak depends on torch's intra-op thread count (each thread's scratch buffers: mhsa forward
at 14x14 held 211,488 B with 2 threads and 156,704 B with 1, measured 2026-12-06), and the count in effect differs
between an inline run (all cores), a local job and a Slurm job. So the call runs with ``settings.memory.threads``
threads (default 1, whatever the runner or the latency metric set), recorded as ``mem_threads``; ``compare``
refuses to compare the memory of rows measured with different counts.
"""
from __future__ import annotations

from typing import Any

import torch

from ._cpu_memory import METHOD as CPU_METHOD
from ._cpu_memory import cpu_peak_bytes
from ._passes import Step, first_call, maybe_compile
from ..core.torch_threads import use_threads
from ..core.validation import PositiveInt, SettingsModel
from ._settings import read_settings
from .base import MetricContext

__all__ = ["CUDA_METHOD", "CPU_METHOD", "cuda_peak_bytes", "measure"]

CUDA_METHOD = "cuda_max_allocated"


class Settings(SettingsModel):
    """``settings.memory``: the torch threads of the measured call (never null: the count is recorded and must be
    the same wherever the cell runs)."""

    threads: PositiveInt = 1


DEFAULTS: dict[str, Any] = Settings().model_dump()


def cuda_peak_bytes(step: Step, device: torch.device) -> int:
    """Peak bytes allocated on ``device`` during ``step()`` above the bytes allocated just before it."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - before)


def measure(ctx: MetricContext) -> dict[str, Any]:
    """The ``mem_peak_bytes``, ``mem_method`` and ``mem_threads`` columns of the cell."""
    s = read_settings(ctx, "memory", Settings)
    with use_threads(s["threads"]):
        return {**_measure(ctx), "mem_threads": torch.get_num_threads()}


def _measure(ctx: MetricContext) -> dict[str, Any]:
    module = ctx.make_module()
    step = Step(maybe_compile(module, ctx.mode), module, ctx.make_input(), ctx.pass_)
    if ctx.mode == "compile":
        first_call(step, ctx.attention)
    else:
        step.reset()
        step()
    step.reset()
    if ctx.device.type == "cuda":
        return {"mem_peak_bytes": cuda_peak_bytes(step, ctx.device), "mem_method": CUDA_METHOD}
    if ctx.device.type == "cpu":
        return {"mem_peak_bytes": cpu_peak_bytes(step), "mem_method": CPU_METHOD}
    raise ValueError(f"memory: device {ctx.device} is not supported (expected cpu or cuda)")
