"""Metric ``latency``: wall time of one call of the cell's pass on the whole batch, as robust statistics.

Method:
    1. A fresh module on the cell's device/dtype and the cell's seeded input (:meth:`MetricContext.make_input`).
    2. Mode ``compile``: ``torch.compile(module)``; its first call (which compiles; for ``forward_backward`` the
       backward graph too) is timed alone into ``compile_time_s`` and never enters the samples. A failure raises
       :class:`~attnbench.metrics._passes.CompileError`.
    3. Warm-up: ``warmup`` calls (default 3), or ``compile_warmup`` (default 5) after a compile, untimed.
    4. Timed samples, one call each, until at least ``min_repeats`` samples (default 5) **and** ``min_time_s``
       (default 0.5 s) of summed sample time, stopping at ``max_repeats`` (default 200) whatever the time.
       Before each sample the gradients are reset (``set_to_none``), outside the timed region.
    5. Timer: CUDA events recorded around the call, after a ``synchronize`` and read after the end event's
       ``synchronize`` ("cuda_event"); on the CPU ``time.perf_counter`` around the call ("perf_counter"; CPU
       kernels return when done, so no synchronisation is needed).

Statistics over the samples (ms): median, q1, q3 (quantiles by linear interpolation between order statistics,
numpy's default), iqr = q3 − q1; ``latency_noisy`` when iqr/median > 0.10 (``torch.utils.benchmark``'s warning
threshold). ``threads`` is ``torch.get_num_threads()`` while timing (setting ``threads`` sets it for the
measurement and restores it afterwards).
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import torch

from ._passes import Step, first_call, maybe_compile
from ._settings import merge_settings, read_settings
from .base import MetricContext

__all__ = ["DEFAULTS", "NOISY_IQR_RATIO", "quantile", "summarize", "collect_samples", "measure", "validate_settings"]

DEFAULTS: dict[str, Any] = {
    "warmup": 3,
    "compile_warmup": 5,
    "min_time_s": 0.5,
    "min_repeats": 5,
    "max_repeats": 200,
    "threads": None,
}
NOISY_IQR_RATIO = 0.10


def quantile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile of already sorted values, linear interpolation between order statistics."""
    if not sorted_values:
        raise ValueError("quantile of no samples")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(samples_ms: list[float]) -> dict[str, Any]:
    """The ``latency_*`` statistics columns of raw samples in milliseconds."""
    s = sorted(samples_ms)
    median, q1, q3 = quantile(s, 0.5), quantile(s, 0.25), quantile(s, 0.75)
    iqr = q3 - q1
    return {
        "latency_ms_median": median,
        "latency_ms_q1": q1,
        "latency_ms_q3": q3,
        "latency_ms_iqr": iqr,
        "latency_n": len(samples_ms),
        "latency_samples_ms": list(samples_ms),
        "latency_noisy": bool(median > 0 and iqr / median > NOISY_IQR_RATIO),
    }


def _cuda_timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def time_call(fn: Callable[[], None]) -> float:
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return time_call


def _cpu_timer(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _timer(device: torch.device) -> tuple[str, Callable[[Callable[[], None]], float]]:
    if device.type == "cuda":
        return "cuda_event", _cuda_timer(device)
    return "perf_counter", _cpu_timer


def collect_samples(
    step: Step, time_call: Callable[[Callable[[], None]], float], min_time_s: float, min_repeats: int, max_repeats: int
) -> list[float]:
    """Timed calls of ``step`` (seconds each) until ``min_repeats`` and ``min_time_s`` are both met.

    Stops at ``max_repeats`` whatever the time; ``min_time_s`` is compared with the summed sample times.
    """
    samples: list[float] = []
    total = 0.0
    while len(samples) < max_repeats and (len(samples) < min_repeats or total < min_time_s):
        step.reset()
        t = time_call(step)
        samples.append(t)
        total += t
    return samples


def _validate(s: dict[str, Any]) -> None:
    for key in ("warmup", "compile_warmup"):
        if s[key] < 0:
            raise ValueError(f"settings.latency.{key}={s[key]} must be >= 0")
    if s["min_repeats"] < 1:
        raise ValueError(f"settings.latency.min_repeats={s['min_repeats']} must be >= 1")
    if s["max_repeats"] < s["min_repeats"]:
        raise ValueError(
            f"settings.latency.max_repeats={s['max_repeats']} must be >= min_repeats={s['min_repeats']}"
        )
    if s["min_time_s"] < 0:
        raise ValueError(f"settings.latency.min_time_s={s['min_time_s']} must be >= 0")
    if s["threads"] is not None and s["threads"] < 1:
        raise ValueError(f"settings.latency.threads={s['threads']} must be >= 1")


def _run(ctx: MetricContext, s: dict[str, Any]) -> dict[str, Any]:
    module = ctx.make_module()
    step = Step(maybe_compile(module, ctx.mode), module, ctx.make_input(), ctx.pass_)
    timer_name, time_call = _timer(ctx.device)
    compile_time_s = None
    warmup = s["warmup"]
    if ctx.mode == "compile":
        compile_time_s = time_call(lambda: first_call(step, ctx.attention))
        warmup = s["compile_warmup"]
    for _ in range(warmup):
        step.reset()
        step()
    samples = collect_samples(step, time_call, s["min_time_s"], s["min_repeats"], s["max_repeats"])
    row = summarize([t * 1e3 for t in samples])
    row.update(latency_timer=timer_name, compile_time_s=compile_time_s, threads=torch.get_num_threads())
    return row


def validate_settings(given: dict[str, Any]) -> None:
    """Check a suite's ``settings.latency`` at load time (types and ranges), so a bad value fails the suite once."""
    _validate(merge_settings(given, "latency", DEFAULTS))


def measure(ctx: MetricContext) -> dict[str, Any]:
    """The ``latency_*``, ``compile_time_s`` and ``threads`` columns of the cell."""
    s = read_settings(ctx, "latency", DEFAULTS)
    _validate(s)
    previous = torch.get_num_threads()
    if s["threads"] is not None:
        torch.set_num_threads(s["threads"])
    try:
        return _run(ctx, s)
    finally:
        torch.set_num_threads(previous)
