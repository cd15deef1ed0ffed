"""Metric ``latency``: wall time of one call of the cell's pass on the whole batch, as robust statistics, and —
when the suite has a baseline — the cell's time as a ratio to the baseline's, measured interleaved.

Method (docs/metrics.md has the reasons):
    1. A fresh module on the cell's device/dtype and the cell's seeded input (:meth:`MetricContext.make_input`).
       ``flush_denormal`` (default on) is applied with ``torch.set_flush_denormal`` and recorded; the subnormal
       values among the parameters and in one forward's output are counted (``subnormal_params``,
       ``subnormal_outputs``): on CPUs they cost 10-100x a normal float and silently distort comparisons.
    2. Mode ``compile``: ``torch._dynamo.reset()`` (so no cell inherits another's recompile budget), then
       ``torch.compile(module)``; its first call is timed alone into ``compile_time_s`` and never enters the
       samples. A failure raises :class:`~attnbench.metrics._passes.CompileError`.
    3. Warm-up: ``warmup`` calls (default 3), or ``compile_warmup`` (default 5) after a compile, untimed except
       the last, which sizes the block: a sample times ``k = ceil(min_block_s / t_call)`` back-to-back calls
       (1 <= k <= 1000) and records their mean, so a 0.1 ms call is not measured at the timer's and the
       dispatcher's granularity. With ``k > 1`` the gradient reset between the calls of a block is timed too.
    4. Timed samples with the garbage collector disabled, until at least ``min_repeats`` samples (default 20)
       **and** ``min_time_s`` (default 0.5 s) of summed time, or until the budget ``max_time_s`` (default 10 s)
       is spent once 5 samples exist, or ``max_repeats`` samples (default 1000). ``latency_stop`` says which.
    5. Paired (``paired``, default on, when the runner passes the baseline's cell: same shape, batch, dtype,
       device, pass and mode, and the cell is not the baseline itself): the baseline's module is built beside
       the cell's, both are warmed and blocked, and the samples are taken in rounds — cell then baseline, A B A B
       — under the same stopping rule on the rounds' summed time. Each sample follows one untimed call of its own
       module (a re-warm: a sample taken right after the other module's call ran 15-20% slower), so every sample
       of either contender has the same history: the other's sample, then its own re-warm. The
       cell's samples from the rounds are its latency samples; ``paired_ratio`` is the median of the per-round
       ratios cell/baseline with a 95% percentile-bootstrap interval (:func:`attnbench.stats.paired_ratio`).
    6. Timer: CUDA events recorded around the block after a ``synchronize``, read after the end event's
       ``synchronize`` ("cuda_event"); on the CPU ``time.perf_counter`` ("perf_counter").

Statistics over the samples (ms): median with its 95% order-statistic interval (``latency_ms_ci_low/high``), q1,
q3 (linear interpolation), iqr. ``latency_noisy`` when iqr/median > 0.10 (``torch.utils.benchmark``'s threshold),
when the median's interval is wider than ±10% of it, or with fewer than 5 samples. ``threads`` is
``torch.get_num_threads()`` while timing (setting ``threads`` sets it for the measurement and restores it).

Model cells (a whole backbone on a batch of images) also get ``throughput_img_s`` = batch / median latency in
seconds, with ``throughput_img_s_ci_low/high`` = batch / the median interval's high/low end (1/x is monotone, so
the order-statistic interval maps onto throughput exactly): images per second through the cell's pass (inference
for ``forward``, training steps for ``forward_backward``), as timm's ``benchmark.py`` and the papers report it.
"""
from __future__ import annotations

import gc
import math
import time
from typing import Any, Callable, Optional

import torch

from .. import stats
from ._passes import Step, first_call, maybe_compile
from ._settings import merge_settings, read_settings
from ..torch_threads import use_threads
from .base import MetricContext

__all__ = ["DEFAULTS", "NOISY_IQR_RATIO", "NOISY_CI_RATIO", "MIN_SAMPLES", "quantile", "summarize",
           "collect_samples", "collect_paired", "is_noisy", "count_subnormal", "throughput", "measure",
           "validate_settings"]

DEFAULTS: dict[str, Any] = {
    "warmup": 3,
    "compile_warmup": 5,
    "min_time_s": 0.5,
    "min_repeats": 20,
    "max_repeats": 1000,
    "max_time_s": 10.0,
    "min_block_s": 1e-3,
    "threads": None,
    "paired": True,
    "flush_denormal": True,
}
NOISY_IQR_RATIO = 0.10
#: the median's 95% interval wider than this fraction of the median (±10%) marks the cell noisy
NOISY_CI_RATIO = 0.20
#: the budget never stops sampling before this many samples
MIN_SAMPLES = 5
MAX_BLOCK = 1000


def quantile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile of already sorted values, linear interpolation between order statistics."""
    if not sorted_values:
        raise ValueError("quantile of no samples")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def is_noisy(median: float, iqr: float, ci: stats.Interval) -> bool:
    """The noisy flag: spread (IQR) or uncertainty of the median (its interval) above 10%, or too few samples."""
    if ci.n < MIN_SAMPLES or median <= 0:
        return True
    return iqr / median > NOISY_IQR_RATIO or (ci.high - ci.low) / median > NOISY_CI_RATIO


def summarize(samples_ms: list[float]) -> dict[str, Any]:
    """The ``latency_*`` statistics columns of raw samples in milliseconds."""
    s = sorted(samples_ms)
    median, q1, q3 = quantile(s, 0.5), quantile(s, 0.25), quantile(s, 0.75)
    iqr = q3 - q1
    ci = stats.median_interval(s)
    return {
        "latency_ms_median": median,
        "latency_ms_q1": q1,
        "latency_ms_q3": q3,
        "latency_ms_iqr": iqr,
        "latency_ms_ci_low": ci.low,
        "latency_ms_ci_high": ci.high,
        "latency_n": len(samples_ms),
        "latency_samples_ms": list(samples_ms),
        "latency_noisy": is_noisy(median, iqr, ci),
    }


def throughput(batch: int, stats_ms: dict[str, Any]) -> dict[str, float]:
    """``throughput_img_s`` (batch / median seconds) and its 95% interval from the median's interval in ms."""
    def per_s(ms: float) -> float:
        return batch / (ms * 1e-3) if ms > 0 else math.inf

    return {"throughput_img_s": per_s(stats_ms["latency_ms_median"]),
            "throughput_img_s_ci_low": per_s(stats_ms["latency_ms_ci_high"]),
            "throughput_img_s_ci_high": per_s(stats_ms["latency_ms_ci_low"])}


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


class _Contender:
    """One module's pass, warmed up and blocked: :meth:`sample` times one block and returns seconds per call."""

    def __init__(self, step: Step, time_call: Callable[[Callable[[], None]], float], min_block_s: float):
        self.step, self.time_call = step, time_call
        self.block = 1
        self.min_block_s = min_block_s

    def warm(self, calls: int) -> None:
        """``calls`` untimed calls, then one timed call that sets the block size."""
        for _ in range(calls):
            self.step.reset()
            self.step()
        self.step.reset()
        t = self.time_call(self.step)
        self.block = max(1, min(MAX_BLOCK, math.ceil(self.min_block_s / t))) if t > 0 else MAX_BLOCK

    def _block(self) -> None:
        for _ in range(self.block):
            self.step.reset()
            self.step()

    def sample(self) -> float:
        if self.block == 1:
            self.step.reset()
            return self.time_call(self.step)
        return self.time_call(self._block) / self.block

    def rewarm(self) -> float:
        """One untimed call; returns its wall time (for the budget). In interleaved rounds the other module's
        call evicts this one's caches and reshapes the allocator's free lists, so a sample taken right after it
        is slower than one taken after a call of its own: measured 15-20% on this project's CPU runs, which made
        the samples bimodal by round parity. A call of its own before each sample puts every sample in the same
        state as an unpaired sample (after a call of itself)."""
        t0 = time.perf_counter()
        self.step.reset()
        self.step()
        if self.step.x.device.type == "cuda":
            torch.cuda.synchronize(self.step.x.device)
        return time.perf_counter() - t0


class _StopRule:
    """Sampling goes on until (n >= min_repeats and spent >= min_time_s) or (spent >= max_time_s and n >= 5) or
    n >= max_repeats; :attr:`reason` names the rule that stopped it."""

    def __init__(self, s: dict[str, Any]):
        self.s, self.reason = s, ""

    def done(self, n: int, spent: float) -> bool:
        s = self.s
        if n >= s["max_repeats"]:
            self.reason = "max_repeats"
        elif n >= s["min_repeats"] and spent >= s["min_time_s"]:
            self.reason = "min_repeats"
        elif spent >= s["max_time_s"] and n >= min(MIN_SAMPLES, s["min_repeats"]):
            self.reason = "max_time_s"
        return bool(self.reason)


def _gc_paused(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` with the garbage collector off (a collection inside a sample would be charged to it)."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        return fn()
    finally:
        if was:
            gc.enable()


def collect_samples(contender: _Contender, rule: _StopRule) -> list[float]:
    """Per-call seconds of successive blocks of one contender until ``rule`` stops."""
    def run() -> list[float]:
        samples: list[float] = []
        spent = 0.0
        while not rule.done(len(samples), spent):
            t = contender.sample()
            samples.append(t)
            spent += t * contender.block
        return samples

    return _gc_paused(run)


def collect_paired(cell: _Contender, base: _Contender, rule: _StopRule) -> tuple[list[float], list[float]]:
    """Interleaved rounds, cell then baseline (A B A B ...): per-call seconds of each.

    Each sample is preceded by an untimed call of the same module (:meth:`_Contender.rewarm`), so every sample
    of either contender has the same history: the other's sample, then its own re-warm. (Alternating the order
    per round, A B B A, gave every other sample a history of two own calls, and the samples split in two modes.)
    The budget counts the re-warm calls too, so ``max_time_s`` still bounds the wall time."""
    def turn(c: _Contender) -> tuple[float, float]:
        warm = c.rewarm()
        t = c.sample()
        return t, warm + t * c.block

    def run() -> tuple[list[float], list[float]]:
        a: list[float] = []
        b: list[float] = []
        spent = 0.0
        while not rule.done(len(a), spent):
            (ta, sa), (tb, sb) = turn(cell), turn(base)
            a.append(ta)
            b.append(tb)
            spent += sa + sb
        return a, b

    return _gc_paused(run)


def count_subnormal(tensors: list[torch.Tensor]) -> int:
    """Non-zero floating values below the dtype's smallest normal number (slow on CPUs unless flushed)."""
    n = 0
    for t in tensors:
        if t.is_floating_point():
            tiny = torch.finfo(t.dtype).tiny
            n += int(((t != 0) & (t.abs() < tiny)).sum())
    return n


def _subnormal_columns(module: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    with torch.no_grad():
        out = module(x.detach())
    outs = [out] if isinstance(out, torch.Tensor) else [t for t in out if isinstance(t, torch.Tensor)]
    return {"subnormal_params": count_subnormal([p.detach() for p in module.parameters()]),
            "subnormal_outputs": count_subnormal(outs)}


def _contender(ctx: MetricContext, s: dict[str, Any], time_call: Callable[[Callable[[], None]], float],
               first: bool = True) -> tuple[_Contender, Optional[float], torch.nn.Module]:
    """A warmed-up contender for ``ctx``, its compile time (mode ``compile``) and the eager module; ``first``
    resets dynamo (the baseline, compiled second, keeps the cell's graphs)."""
    module = ctx.make_module()
    step = Step(maybe_compile(module, ctx.mode, reset=first), module, ctx.make_input(), ctx.pass_)
    contender = _Contender(step, time_call, s["min_block_s"])
    compile_time_s, warmup = None, s["warmup"]
    if ctx.mode == "compile":
        compile_time_s = time_call(lambda: first_call(step, ctx.attention))
        warmup = s["compile_warmup"]
    contender.warm(warmup)
    return contender, compile_time_s, module


def _run(ctx: MetricContext, s: dict[str, Any]) -> dict[str, Any]:
    timer_name, time_call = _timer(ctx.device)
    cell, compile_time_s, module = _contender(ctx, s, time_call)
    row: dict[str, Any] = _subnormal_columns(module, cell.step.x)
    rule = _StopRule(s)
    baseline = ctx.baseline if s["paired"] else None
    if baseline is not None:
        base, _, _ = _contender(baseline, s, time_call, first=False)
        a, b = collect_paired(cell, base, rule)
        ratio = stats.paired_ratio(a, b)
        row.update(paired_baseline=baseline.label, paired_ratio=ratio.estimate, paired_ratio_low=ratio.low,
                   paired_ratio_high=ratio.high, paired_rounds=ratio.n,
                   paired_ratios=[x / y for x, y in zip(a, b)], paired_baseline_ms_median=_median_ms(b))
        samples = a
    else:
        samples = collect_samples(cell, rule)
    row.update(summarize([t * 1e3 for t in samples]))
    if ctx.kind == "model":
        row.update(throughput(ctx.batch, row))
    row.update(latency_timer=timer_name, latency_block=cell.block, latency_stop=rule.reason,
               compile_time_s=compile_time_s, threads=torch.get_num_threads())
    return row


def _median_ms(samples: list[float]) -> float:
    return quantile(sorted(samples), 0.5) * 1e3


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
    if s["max_time_s"] <= 0:
        raise ValueError(f"settings.latency.max_time_s={s['max_time_s']} must be > 0")
    if s["min_block_s"] < 0:
        raise ValueError(f"settings.latency.min_block_s={s['min_block_s']} must be >= 0")
    if s["threads"] is not None and s["threads"] < 1:
        raise ValueError(f"settings.latency.threads={s['threads']} must be >= 1")


def validate_settings(given: dict[str, Any]) -> None:
    """Check a suite's ``settings.latency`` at load time (types and ranges), so a bad value fails the suite once."""
    _validate(merge_settings(given, "latency", DEFAULTS))


def measure(ctx: MetricContext) -> dict[str, Any]:
    """The ``latency_*``, ``paired_*`` (with a baseline), ``compile_time_s``, ``threads``, ``flush_denormal`` and
    ``subnormal_*`` columns of the cell."""
    s = read_settings(ctx, "latency", DEFAULTS)
    _validate(s)
    with use_threads(s["threads"]):
        # returns False where the CPU cannot flush (then subnormals stay, and the row says so)
        flushing = bool(torch.set_flush_denormal(s["flush_denormal"])) and s["flush_denormal"]
        return {**_run(ctx, s), "flush_denormal": flushing}
