"""Metric ``latency``: wall time of one call of the cell's pass on the whole batch, sampled until its uncertainty
is small enough, and — when the suite has a baseline — the cell's time as a ratio to the baseline's, measured
interleaved. The reasons behind each step, and the measurements that chose the defaults, are in docs/metrics.md.

Method:
    1. A fresh module on the cell's device/dtype and the cell's seeded input (:meth:`MetricContext.make_input`).
       ``flush_denormal`` (default on) is applied with ``torch.set_flush_denormal`` and recorded; the subnormal
       values among the parameters and in one forward's output are counted (``subnormal_params``,
       ``subnormal_outputs``): on CPUs they cost 10-100x a normal float and silently distort comparisons.
    2. Mode ``compile``: ``torch._dynamo.reset()`` (so no cell inherits another's recompile budget), then
       ``torch.compile(module)``; its first call is timed alone into ``compile_time_s`` and never enters the
       samples. A failure raises :class:`~attnbench.metrics._passes.CompileError`.
    1b. ``steady_malloc`` (default on): glibc's mmap/trim thresholds pinned to the values their dynamic rule ends at
       (:mod:`attnbench.core.malloc_steady`), so whether a call's temporaries fault in fresh pages does not depend
       on what ran before in the process; recorded in ``malloc``, with the mean minor page faults per call
       (``latency_faults_per_call``, counted outside the timed region).
    3. Warm-up: ``warmup`` calls (default 3), or ``compile_warmup`` (default 5) after a compile, and one more, all
       timed: the median of all but the first sizes the block: a sample times ``k`` back-to-back calls, the
       smallest power of two with ``k * t_call >= min_block_s`` (:func:`block_size`, 1 <= k <= 1024), and records
       their mean, so a 0.1 ms call is not measured at the timer's granularity.
    4. **Rounds and epochs.** A round times one sample of the cell — and, paired, one of the baseline right after
       it (A B A B …; ``paired``, default on, when the runner passes the baseline's cell). Rounds come in
       *epochs* of about ``epoch_s`` (0.1 s, at least one round); in eager mode each epoch of short calls
       (``short_call_s``, 250 ms) starts from freshly built modules at new addresses. The spread *between* epochs is
       what the interval is made of, so it carries the slow drifts, layout effects and load changes that make
       two processes disagree — the variation a within-process bootstrap misses.
    4b. **Shared baseline** (``shared_baseline``, default on; :func:`measure_group`, :mod:`attnbench.engine.shared_baseline`):
       when the runner measures the cells of one shape one after another in its own process, the first of them
       times *all* of them in one series of rounds with one baseline series: every round samples the baseline
       and each attention, the shorter calls ``sqrt(longest / own)`` times (even counts, placed symmetrically
       about the round's middle, :func:`round_schedule`) so that a drift linear over the round cancels from every
       ratio. Each attention's ratio is its round median over the baseline's in that round. The baseline was
       timed once per attention before (half of the resolution sweep's sampling time).
    5. **Re-warm.** A sample of a short call (its block shorter than ``short_call_s``, 250 ms) follows one
       untimed call of its own module, so neither contender's sample follows the other's call (without it the
       ratios moved by 3-29% for calls of 2-55 ms); longer calls skip it (measured: docs/metrics.md).
    6. **Preempted samples.** On the CPU each sample records its process CPU time beside its wall time; a sample
       whose wall time exceeds its CPU time by more than ``preempt_fraction`` (0.10) of it was preempted: kept in
       ``latency_samples_ms``, marked in ``latency_preempted_mask``, counted in ``latency_preempted``, and left out
       of every statistic (a paired round with either sample preempted is left out of the ratio).
    7. **Stop on the answer's uncertainty.** After each epoch, with at least ``min_repeats`` clean rounds and
       ``min_epochs`` epochs (4): stop (``latency_stop = "target"``) when the 95% interval the reader uses — the
       ratio's for a paired cell, the median's otherwise — is within ±``target_rel_ci`` (3%) of its estimate; or
       (``"budget"``) when the cell's budget is spent (and the minimum epochs and 5 clean rounds exist): ``max_time_s``, or its share of the suite's
       ``suite_budget_s`` (the runner passes it as ``budget_s``); or (``"max_repeats"``) at ``max_repeats``
       rounds. A machine so loaded that the clean rounds never come stops at three times the budget, after at
       least 5 rounds (``"budget_exhausted"``).
    8. Timer: CUDA events recorded around the block after a ``synchronize`` ("cuda_event"); on the CPU
       ``time.perf_counter`` with ``time.process_time`` beside it ("perf_counter+process_time").

Statistics (:func:`summarize`, over the clean samples, ms): median, q1, q3, iqr; the median's 95% interval
(``latency_ms_ci_low/high``) from :func:`attnbench.core.stats.epoch_interval`; the paired ratio
(:func:`summarize_paired`) is the geometric mean of the epochs' median ratios with its interval
(:func:`attnbench.core.stats.epoch_mean_interval`). ``latency_noisy`` and ``latency_noisy_reason`` come from the one noisy rule
(:func:`attnbench.core.uncertainty.noisy_reason`): the reader's interval wider than ±``noisy_rel_ci`` (10%), or fewer
than 5 clean samples. ``threads`` is ``torch.get_num_threads()`` while timing.

Model cells (a whole backbone on a batch of images) also get ``throughput_img_s`` = batch / median latency in
seconds, with ``throughput_img_s_ci_low/high`` from the median's interval (1/x is monotone).
"""
from __future__ import annotations

import dataclasses
import gc
import math
import time
from typing import Annotated, Any, Callable, Optional, Sequence

import torch
from pydantic import Field, model_validator

from ..core import malloc_steady, stats, uncertainty
from ..core.torch_threads import use_threads
from ._passes import Step, first_call, maybe_compile
from ..core.validation import PositiveInt, SettingsModel, parse
from .base import MetricContext

__all__ = ["DEFAULTS", "MIN_SAMPLES", "quantile", "summarize", "summarize_paired", "sample_rounds", "Rounds",
           "Policy", "Settings", "measure_group", "samples_per_round", "round_schedule", "count_subnormal", "throughput", "measure", "finish_row",
           "merge_rows"]

_Seconds = Optional[Annotated[float, Field(gt=0)]]


class Settings(SettingsModel):
    """``settings.latency``: types, defaults and ranges (docs/metrics.md describes each option)."""

    warmup: Annotated[int, Field(ge=0)] = 3
    compile_warmup: Annotated[int, Field(ge=0)] = 5
    target_rel_ci: Annotated[float, Field(gt=0)] = uncertainty.TARGET_REL_CI
    noisy_rel_ci: Annotated[float, Field(gt=0)] = uncertainty.NOISY_REL_CI
    min_repeats: Annotated[int, Field(ge=1)] = 10
    min_epochs: Annotated[int, Field(ge=1)] = 4
    min_time_s: Annotated[float, Field(ge=0)] = 0.0
    max_repeats: int = 1000
    max_time_s: Annotated[float, Field(gt=0)] = 10.0
    budget_s: _Seconds = None
    suite_budget_s: _Seconds = None
    epoch_s: Annotated[float, Field(ge=0)] = 0.1
    short_call_s: Annotated[float, Field(ge=0)] = 0.25
    preempt_fraction: Annotated[float, Field(gt=0, lt=1)] = uncertainty.PREEMPT_FRACTION
    min_block_s: Annotated[float, Field(ge=0)] = 1e-3
    processes: Annotated[int, Field(ge=1)] = 1
    threads: Optional[PositiveInt] = None
    paired: bool = True
    shared_baseline: bool = True
    flush_denormal: bool = True
    steady_malloc: bool = True

    @model_validator(mode="after")
    def _repeats_in_order(self) -> "Settings":
        if self.max_repeats < self.min_repeats:
            raise ValueError(f"max_repeats={self.max_repeats} must be >= min_repeats={self.min_repeats}")
        return self


DEFAULTS: dict[str, Any] = Settings().model_dump()
MIN_SAMPLES = uncertainty.MIN_SAMPLES
MAX_BLOCK = 1024
#: an epoch never holds more rounds than this (so even the fastest cell has several epochs)
MAX_EPOCH_ROUNDS = 25
#: the most samples one contender takes in a round of a shared-baseline group (:func:`samples_per_round`)
MAX_PER_ROUND = 8
#: a machine that never lets clean rounds through stops at this multiple of the cell's budget
HARD_BUDGET_FACTOR = 3.0


def quantile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile of already sorted values, linear interpolation between order statistics."""
    if not sorted_values:
        raise ValueError("quantile of no samples")
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _split(values: Sequence[float], mask: Sequence[bool], epoch_sizes: Sequence[int]) -> list[list[float]]:
    """The clean values of each epoch (``epoch_sizes`` rounds each, in order)."""
    groups, i = [], 0
    for size in epoch_sizes:
        groups.append([v for v, bad in zip(values[i:i + size], mask[i:i + size]) if not bad])
        i += size
    if i < len(values):  # values without an epoch (a row written before epochs): one more group
        groups.append([v for v, bad in zip(values[i:], mask[i:]) if not bad])
    return groups


def summarize(samples_ms: Sequence[float], mask: Optional[Sequence[bool]] = None,
              epoch_sizes: Optional[Sequence[int]] = None) -> dict[str, Any]:
    """The ``latency_*`` statistics columns of raw samples in milliseconds.

    Args:
        mask: True for a preempted sample (kept in ``latency_samples_ms``, left out of every statistic).
        epoch_sizes: rounds per epoch, in order (default: one epoch); the interval comes from their spread.
    """
    samples = [float(v) for v in samples_ms]
    mask = [bool(m) for m in mask] if mask is not None else [False] * len(samples)
    epoch_sizes = list(epoch_sizes) if epoch_sizes is not None else [len(samples)]
    groups = _split(samples, mask, epoch_sizes)
    clean = sorted(v for g in groups for v in g)
    n_used = len(clean)
    if not clean and samples:  # every sample preempted (the budget ran out first): all of them, flagged noisy
        groups = _split(samples, [False] * len(samples), epoch_sizes)
        clean = sorted(samples)
    out: dict[str, Any] = {"latency_n": len(samples), "latency_n_used": n_used,
                           "latency_preempted": int(sum(mask)), "latency_preempted_mask": mask,
                           "latency_epochs": sum(1 for g in groups if g), "latency_epoch_sizes": epoch_sizes,
                           "latency_samples_ms": samples}
    if not clean:
        return {**out, **{k: math.nan for k in ("latency_ms_median", "latency_ms_q1", "latency_ms_q3",
                                                 "latency_ms_iqr", "latency_ms_ci_low", "latency_ms_ci_high")}}
    median, q1, q3 = quantile(clean, 0.5), quantile(clean, 0.25), quantile(clean, 0.75)
    ci = stats.epoch_interval(groups)
    return {**out, "latency_ms_median": median, "latency_ms_q1": q1, "latency_ms_q3": q3, "latency_ms_iqr": q3 - q1,
            "latency_ms_ci_low": ci.low, "latency_ms_ci_high": ci.high}


def summarize_paired(a_ms: Sequence[float], b_ms: Sequence[float], a_mask: Sequence[bool],
                     b_mask: Sequence[bool], epoch_sizes: Sequence[int]) -> dict[str, Any]:
    """The ``paired_*`` columns of interleaved rounds: per-round ratios ``a/b``, the rounds with either sample
    preempted left out; the ratio is the geometric mean of the epochs' median ratios, with its Student-t interval
    over the epochs (:func:`attnbench.core.stats.epoch_mean_interval`)."""
    ratios = [x / y if y > 0 else math.nan for x, y in zip(a_ms, b_ms)]
    mask = [bool(p or q) or not math.isfinite(r) for p, q, r in zip(a_mask, b_mask, ratios)]
    groups = _split(ratios, mask, epoch_sizes)
    used = sum(len(g) for g in groups)
    if not used:  # every round preempted: all of them, flagged noisy
        groups = _split(ratios, [not math.isfinite(r) for r in ratios], epoch_sizes)
    clean_b = [v for v, bad in zip(b_ms, b_mask) if not bad] or [float(v) for v in b_ms]
    out: dict[str, Any] = {"paired_rounds": len(ratios), "paired_rounds_used": used,
                           "paired_ratios": ratios, "paired_preempted_mask": mask,
                           "paired_baseline_samples_ms": [float(v) for v in b_ms],
                           "paired_baseline_preempted_mask": [bool(m) for m in b_mask],
                           "paired_baseline_ms_median": quantile(sorted(clean_b), 0.5) if clean_b else math.nan}
    if not any(groups):
        return {**out, "paired_ratio": math.nan, "paired_ratio_low": math.nan, "paired_ratio_high": math.nan}
    ci = stats.epoch_mean_interval(groups)
    return {**out, "paired_ratio": ci.estimate, "paired_ratio_low": ci.low, "paired_ratio_high": ci.high}


def finish_row(row: dict[str, Any], noisy_rel_ci: float) -> dict[str, Any]:
    """Add the reader's relative half-width and the noisy flag (the one rule) to a row with latency columns."""
    interval = uncertainty.reading_interval(row)
    row["latency_rel_ci"] = uncertainty.rel_half_width(interval) if interval is not None else math.nan
    row["latency_noisy_rel_ci"] = noisy_rel_ci
    row["latency_noisy_reason"] = uncertainty.noisy_reason(row, noisy_rel_ci)
    row["latency_noisy"] = row["latency_noisy_reason"] is not None
    return row


#: per-sample / per-round list columns that :func:`merge_rows` concatenates across processes
_LIST_COLUMNS = ("latency_samples_ms", "latency_preempted_mask", "latency_cpu_ms", "latency_epoch_sizes",
                 "paired_ratios", "paired_preempted_mask", "paired_baseline_samples_ms",
                 "paired_baseline_preempted_mask")


def merge_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The latency columns of one cell measured in several processes (``settings.latency.processes``): samples
    and epochs concatenated in process order, every statistic recomputed over all of them, so each process's
    epochs enter the interval and with them the spread between processes."""
    first = rows[0]
    lists = {k: [v for r in rows for v in (r.get(k) or [])] for k in _LIST_COLUMNS}
    out = {**first, **lists}
    out.update(summarize(lists["latency_samples_ms"], lists["latency_preempted_mask"], lists["latency_epoch_sizes"]))
    if "paired_ratio" in first:
        a, b = lists["latency_samples_ms"], lists["paired_baseline_samples_ms"]
        out.update(summarize_paired(a, b, lists["latency_preempted_mask"], lists["paired_baseline_preempted_mask"],
                                    lists["latency_epoch_sizes"]))
    _widen_by_process(out, rows)
    if "throughput_img_s" in first:
        batch = first["throughput_img_s"] * first["latency_ms_median"] * 1e-3
        out.update(throughput(round(batch), out))
    out.update(latency_processes=len(rows), latency_spent_s=sum(r.get("latency_spent_s") or 0.0 for r in rows),
               latency_stop=",".join(str(r.get("latency_stop")) for r in rows))
    return finish_row(out, first.get("latency_noisy_rel_ci", uncertainty.NOISY_REL_CI))


def _widen_by_process(out: dict[str, Any], rows: Sequence[dict[str, Any]]) -> None:
    """The process is the top level of the pooled samples: the interval is at least the one whose groups are the
    processes (each process's clean values one group), so a few processes that disagree widen it even when each
    has many tight epochs (pooling their epochs alone held only 6 of 12 single-process ratios, docs/metrics.md)."""
    def widen(low: str, high: str, groups: list[list[float]], interval=stats.epoch_interval) -> None:
        groups = [g for g in groups if g]
        if len(groups) < 2 or not math.isfinite(out.get(low, math.nan)):
            return
        iv = interval(groups)
        out[low], out[high] = min(out[low], iv.low), max(out[high], iv.high)

    widen("latency_ms_ci_low", "latency_ms_ci_high", [uncertainty.clean_samples(r) for r in rows])
    if "paired_ratio" in out:  # the ratio's own statistic (summarize_paired), over the processes
        widen("paired_ratio_low", "paired_ratio_high", [uncertainty.clean_ratios(r) for r in rows],
              stats.epoch_mean_interval)


def throughput(batch: int, stats_ms: dict[str, Any]) -> dict[str, float]:
    """``throughput_img_s`` (batch / median seconds) and its 95% interval from the median's interval in ms."""
    def per_s(ms: float) -> float:
        return batch / (ms * 1e-3) if ms > 0 else math.inf

    return {"throughput_img_s": per_s(stats_ms["latency_ms_median"]),
            "throughput_img_s_ci_low": per_s(stats_ms["latency_ms_ci_high"]),
            "throughput_img_s_ci_high": per_s(stats_ms["latency_ms_ci_low"])}


# ------------------------------------------------------------------------------------------------------ timing
#: a timer takes the call and returns (wall seconds, process CPU seconds or None)
TimeCall = Callable[[Callable[[], None]], tuple[float, Optional[float]]]


def _cuda_timer(device: torch.device) -> TimeCall:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def time_call(fn: Callable[[], None]) -> tuple[float, Optional[float]]:
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, None  # the host waits for the device: its CPU time says nothing

    return time_call


def _cpu_timer(fn: Callable[[], None]) -> tuple[float, Optional[float]]:
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    t1, c1 = time.perf_counter(), time.process_time()
    return t1 - t0, c1 - c0


def _timer(device: torch.device) -> tuple[str, TimeCall]:
    if device.type == "cuda":
        return "cuda_event", _cuda_timer(device)
    return "perf_counter+process_time", _cpu_timer


def block_size(call_s: float, min_block_s: float) -> int:
    """Calls per sample: the power of two ``k`` with ``k * call_s >= min_block_s`` (1 for calls at least that long,
    at most :data:`MAX_BLOCK`).

    Powers of two, because the per-call time of a block depends a little on its length (back-to-back calls keep
    more in the caches), and a block sized from one noisy warm-up time changed length between processes for 17 of
    the resolution sweep's 80 cells (e.g. 7 and 4 calls), moving their ratios by up to 15% (docs/metrics.md,
    "Verdicts on a machine we did not tune on"); with powers of two only a call time near a boundary can flip."""
    if call_s <= 0:
        return MAX_BLOCK
    need = min_block_s / call_s
    return 1 if need <= 1 else min(MAX_BLOCK, 2 ** math.ceil(math.log2(need)))


class _Contender:
    """One module's pass: warmed up, blocked, rebuilt at each epoch of short calls.

    Args:
        build: a fresh :class:`Step` (a new module and input; the same seed, so the same weights and values).
        time_call: the timer.
        min_block_s: a sample times enough back-to-back calls to last this long.
        short_call_s: a sample shorter than this gets a re-warm call before it, and fresh modules each epoch.
        rebuildable: False for compiled modules (a rebuild would compile again).
    """

    def __init__(self, build: Callable[[], Step], time_call: TimeCall, min_block_s: float, short_call_s: float,
                 rebuildable: bool = True):
        self.build, self.time_call = build, time_call
        self.min_block_s, self.short_call_s, self.rebuildable = min_block_s, short_call_s, rebuildable
        self.step = build()
        self.block, self.call_s = 1, 0.0
        self._pad: Optional[torch.Tensor] = None

    @property
    def short(self) -> bool:
        return self.call_s * self.block < self.short_call_s

    def warm(self, calls: int) -> float:
        """``calls + 1`` calls, all timed: the median of those after the first (which may still be cold) is the
        call's time, which sets the block size (:func:`block_size`); returns the wall time spent."""
        t0 = time.perf_counter()
        timed = []
        for _ in range(calls + 1):
            self.step.reset()
            timed.append(self.time_call(self.step)[0])
        self.call_s = quantile(sorted(timed[1:] or timed), 0.5)
        self.block = block_size(self.call_s, self.min_block_s)
        return time.perf_counter() - t0

    def rebuild(self, epoch: int) -> float:
        """Fresh modules and input at new addresses (a pad of an epoch-dependent size is allocated first), and
        one untimed call; returns the wall time spent. Only for short calls of rebuildable contenders."""
        if not (self.rebuildable and self.short):
            return 0.0
        t0 = time.perf_counter()
        device = self.step.x.device
        self.step = None  # free the old module before the pad, so the new one lands elsewhere
        self._pad = torch.empty(((epoch * 7919) % 4096 + 1) * 64, dtype=torch.uint8, device=device)
        self.step = self.build()
        self.step.reset()
        self.step()
        return time.perf_counter() - t0

    def _block(self) -> None:
        for _ in range(self.block):
            self.step.reset()
            self.step()

    def sample(self) -> tuple[float, Optional[float], float]:
        """(wall seconds per call, CPU seconds per call or None, wall seconds spent)."""
        if self.block == 1:
            self.step.reset()
            wall, cpu = self.time_call(self.step)
        else:
            wall, cpu = self.time_call(self._block)
        k = self.block
        return wall / k, (cpu / k if cpu is not None else None), wall

    def rewarm(self) -> float:
        """One untimed call of its own before a short sample; returns its wall time (for the budget).

        In interleaved rounds the other module's call evicts this one's caches and reshapes the allocator's free
        lists, so a short sample taken right after it is slower than one taken after a call of its own (15-20%
        on this project's CPU runs): a call of its own first gives every sample the same history."""
        if not self.short:
            return 0.0
        t0 = time.perf_counter()
        self.step.reset()
        self.step()
        if self.step.x.device.type == "cuda":
            torch.cuda.synchronize(self.step.x.device)
        return time.perf_counter() - t0


@dataclasses.dataclass
class Policy:
    """When sampling stops (the settings of step 7 of the method), and what counts as preempted.

    The defaults are those of :class:`Settings`, the one owner of the latency settings."""

    #: stop once the reader's 95% interval is within ± this fraction of its estimate
    target_rel_ci: float = DEFAULTS["target_rel_ci"]
    #: samples per contender before the interval is looked at
    min_repeats: int = DEFAULTS["min_repeats"]
    #: epochs (module rebuilds) before the interval is looked at: the epoch intervals need several
    min_epochs: int = DEFAULTS["min_epochs"]
    min_time_s: float = DEFAULTS["min_time_s"]
    max_repeats: int = DEFAULTS["max_repeats"]
    #: this group's share of the suite budget, capped by ``max_time_s``
    budget_s: float = DEFAULTS["max_time_s"]
    #: wall seconds per epoch, after which the modules are rebuilt
    epoch_s: float = DEFAULTS["epoch_s"]
    #: a sample whose wall time exceeds its CPU time by more than this fraction was preempted
    preempt_fraction: float = DEFAULTS["preempt_fraction"]

    @classmethod
    def from_settings(cls, s: dict[str, Any]) -> "Policy":
        """The policy of merged ``settings.latency`` ``s``: ``budget_s`` (else ``max_time_s``), capped at ``max_time_s``."""
        budget = s["budget_s"] if s["budget_s"] is not None else s["max_time_s"]
        same = {f.name: s[f.name] for f in dataclasses.fields(cls) if f.name != "budget_s"}
        return cls(**same, budget_s=min(budget, s["max_time_s"]))


@dataclasses.dataclass
class Rounds:
    """What :func:`sample_rounds` collected: per contender the per-call seconds, CPU seconds, preempted marks and
    round number of each sample (a contender may take several samples per round), the rounds per epoch, why it
    stopped and the wall seconds spent (timed calls, re-warms, rebuilds), in all and per contender.

    ``baseline``: the contender the others are paired with (their reader's interval is their ratio to it, round by
    round), or None (each contender's median). ``reported``: the contenders whose intervals decide the stop."""

    times: list[list[float]]
    cpu: list[list[Optional[float]]]
    preempted: list[list[bool]]
    epoch_sizes: list[int]
    stop: str = ""
    spent_s: float = 0.0
    round_of: list[list[int]] = dataclasses.field(default_factory=list)
    baseline: Optional[int] = None
    reported: list[int] = dataclasses.field(default_factory=lambda: [0])
    spent_by: list[float] = dataclasses.field(default_factory=list)
    faults: list[list[float]] = dataclasses.field(default_factory=list)

    def epoch_samples(self, i: int) -> list[int]:
        """Contender ``i``'s samples per epoch (its rounds per epoch times its samples per round)."""
        bounds, start = [], 0
        for size in self.epoch_sizes:
            bounds.append((start, start + size))
            start += size
        return [sum(1 for r in self.round_of[i] if lo <= r < hi) for lo, hi in bounds]

    def round_values(self, i: int) -> tuple[list[float], list[bool]]:
        """Contender ``i``'s value in each round — the median of its clean samples in it (of all of them, marked
        preempted, when none is clean) — and the preempted mark of each round."""
        n = sum(self.epoch_sizes)
        clean: list[list[float]] = [[] for _ in range(n)]
        every: list[list[float]] = [[] for _ in range(n)]
        for t, bad, r in zip(self.times[i], self.preempted[i], self.round_of[i]):
            every[r].append(t)
            if not bad:
                clean[r].append(t)
        values = [quantile(sorted(c or e), 0.5) if (c or e) else math.nan for c, e in zip(clean, every)]
        return values, [not c for c in clean]

    def summary(self, i: int) -> dict[str, Any]:
        """The ``latency_*`` statistics of contender ``i`` (ms)."""
        return summarize([t * 1e3 for t in self.times[i]], self.preempted[i], self.epoch_samples(i))

    def paired(self, i: int) -> dict[str, Any]:
        """The ``paired_*`` columns of contender ``i`` against the baseline, round by round (ms)."""
        a, a_bad = self.round_values(i)
        b, b_bad = self.round_values(self.baseline)
        return summarize_paired([v * 1e3 for v in a], [v * 1e3 for v in b], a_bad, b_bad, self.epoch_sizes)

    def interval_of(self, i: int) -> Optional[stats.Interval]:
        """The interval the reader of contender ``i`` uses: its ratio to the baseline's, else its median's."""
        if self.baseline is not None and i != self.baseline:
            row = self.paired(i)
            est = row["paired_ratio"]
            return None if not math.isfinite(est) else stats.Interval(
                est, row["paired_ratio_low"], row["paired_ratio_high"], row["paired_rounds_used"])
        row = self.summary(i)
        est = row["latency_ms_median"]
        return None if not math.isfinite(est) else stats.Interval(
            est, row["latency_ms_ci_low"], row["latency_ms_ci_high"], row["latency_n_used"])

    def interval(self) -> Optional[stats.Interval]:
        """The first reported contender's interval (the cell's, in a one-cell measurement)."""
        return self.interval_of(self.reported[0])

    def _clean_by_round(self, i: int) -> list[bool]:
        """Per round: contender ``i`` — and, paired, the baseline — has a clean sample in it."""
        _, bad = self.round_values(i)
        if self.baseline is not None and i != self.baseline:
            _, base_bad = self.round_values(self.baseline)
            bad = [x or y for x, y in zip(bad, base_bad)]
        return [not b for b in bad]

    def clean_rounds(self) -> int:
        """The clean rounds of the reported contender that has fewest (a round counts for a contender when its
        own sample and the baseline's are clean; a neighbour's preempted sample does not spoil it)."""
        return min(sum(self._clean_by_round(i)) for i in self.reported)

    def clean_epochs(self) -> int:
        def count(ok: list[bool]) -> int:
            n, start = 0, 0
            for size in self.epoch_sizes:
                n += any(ok[start:start + size])
                start += size
            return n

        return min(count(self._clean_by_round(i)) for i in self.reported)


def _stop_reason(r: Rounds, policy: Policy) -> str:
    """Why sampling stops after this epoch, or "" to go on (step 7 of the method)."""
    n, clean, epochs = sum(r.epoch_sizes), r.clean_rounds(), r.clean_epochs()
    if n >= policy.max_repeats:
        return "max_repeats"
    enough = clean >= policy.min_repeats and epochs >= policy.min_epochs
    if enough and r.spent_s >= policy.min_time_s:
        intervals = [r.interval_of(i) for i in r.reported]
        if all(iv is not None and uncertainty.rel_half_width(iv) <= policy.target_rel_ci for iv in intervals):
            return "target"
    if r.spent_s >= policy.budget_s and clean >= MIN_SAMPLES and epochs >= policy.min_epochs:
        return "budget"
    if r.spent_s >= HARD_BUDGET_FACTOR * policy.budget_s and n >= MIN_SAMPLES:
        return "budget_exhausted"  # the clean rounds never came: preempted all along
    return ""


def samples_per_round(sample_s: Sequence[float], most: int = MAX_PER_ROUND) -> list[int]:
    """How many samples each contender takes per round: about ``sqrt(longest / own / (n - 1))`` for ``n``
    contenders, 1 or an even number up to ``most``.

    A round is as long as its longest sample; a contender many times shorter can take several samples in the same
    time. For one attention against one baseline the variance of the per-round ratio is smallest, for the time
    spent, when the counts go as the square root of the cost ratio (the classic optimal allocation with equal
    per-sample spread); with ``n - 1`` attentions sharing the baseline's samples, the baseline's own spread is in
    every ratio and more rounds pay more than more samples of one attention, hence the ``n - 1``. Counts above 1
    are even, so the samples come in pairs on either side of the round's middle (:func:`round_schedule`), where
    the longest contender's one sample sits: a sample right next to it would be half its length off-centre."""
    longest = max(sample_s) if sample_s else 0.0
    sharing = max(1, len(sample_s) - 1)
    out = []
    for s in sample_s:
        raw = math.sqrt(longest / s / sharing) if s > 0 else float(most)
        out.append(1 if raw < 1.5 else max(2, min(most - most % 2, 2 * round(raw / 2))))
    return out


def round_schedule(per_round: Sequence[int]) -> list[list[int]]:
    """The slots of one round: slot ``j`` lists the contenders sampled in it, in order.

    A round has ``K`` slots, the largest count made odd so that it has a middle slot. A contender's ``k`` samples
    sit at the evenly spaced positions ``(m + 0.5) K / k - 0.5``, each moved to the slot on its side away from
    the middle (so no two share a slot). The positions are symmetric about the middle slot, and so is every
    contender's set of slots: under a drift that is linear over the round, each contender's samples average to
    the speed at the round's middle — the baseline's single sample there, too — and the ratio of round medians
    carries no drift (checked with a drifting fake clock in tests/metrics/test_latency_groups.py)."""
    slots = max(per_round) if per_round else 1
    slots += 1 - slots % 2
    middle = (slots - 1) / 2

    def places(k: int) -> list[int]:
        out = []
        for m in range(k):
            x = (m + 0.5) * slots / k - 0.5
            out.append(middle if abs(x - middle) < 1e-9 else math.floor(x) if x < middle else math.ceil(x))
        return [int(v) for v in out]

    taken = [set(places(k)) for k in per_round]
    return [[i for i in range(len(per_round)) if j in taken[i]] for j in range(slots)]


def sample_rounds(contenders: Sequence[_Contender], policy: Policy, *, per_round: Optional[Sequence[int]] = None,
                  baseline: Optional[int] = None, reported: Optional[Sequence[int]] = None) -> Rounds:
    """Rounds of interleaved samples in epochs, until :func:`_stop_reason` says stop.

    Args:
        per_round: samples per round of each contender (default one each: contender 0, then 1, …), spread over
            the round by :func:`round_schedule`, the contenders' order in a slot rotating from round to round (no
            contender always goes first); default one sample each, contender 0 then 1, … in every round.
        baseline: the contender the others' ratios are taken to (default: contender 1 of two, else none).
        reported: the contenders whose intervals must reach the target (default: contender 0).

    Every sample of a short call follows a re-warm of its own module; each epoch of short calls starts from
    rebuilt modules. The spent time counts everything done, so the budget bounds the wall time."""
    k = len(contenders)
    if baseline is None and k == 2:
        baseline = 1
    r = Rounds([[] for _ in range(k)], [[] for _ in range(k)], [[] for _ in range(k)], [],
               round_of=[[] for _ in range(k)], baseline=baseline, reported=list(reported or [0]),
               spent_by=[0.0] * k, faults=[[] for _ in range(k)])
    slots = round_schedule(list(per_round) if per_round is not None else [1] * k)
    rotate = per_round is not None
    rounds_per_epoch = 0

    def one_round(number: int) -> float:
        spent = 0.0
        for j, slot in enumerate(slots):
            shift = number % len(slot) if rotate and slot else 0
            order = slot[shift:] + slot[:shift]
            if rotate and j > len(slots) // 2:
                order = order[::-1]  # the mirror of slot len - 1 - j: the round is symmetric in time, too
            for i in order:
                c = contenders[i]
                took = c.rewarm()
                faults = malloc_steady.minor_faults()  # outside the timed region: getrusage is a system call
                wall, cpu, timed = c.sample()
                r.faults[i].append((malloc_steady.minor_faults() - faults) / max(1, c.block))
                took += timed
                r.spent_by[i] += took
                spent += took
                r.times[i].append(wall)
                r.cpu[i].append(cpu)
                r.preempted[i].append(uncertainty.preempted(wall, cpu, fraction=policy.preempt_fraction))
                r.round_of[i].append(number)
        return spent

    def run() -> Rounds:
        nonlocal rounds_per_epoch
        epoch, number = 0, 0
        while True:
            if epoch:
                for i, c in enumerate(contenders):
                    took = c.rebuild(epoch)
                    r.spent_by[i] += took
                    r.spent_s += took
            size = 0
            while True:
                took = one_round(number)
                number += 1
                r.spent_s += took
                size += 1
                if not rounds_per_epoch:  # the first round sizes every epoch
                    rounds_per_epoch = max(1, min(MAX_EPOCH_ROUNDS, math.ceil(policy.epoch_s / max(took, 1e-9))))
                if size >= rounds_per_epoch or number >= policy.max_repeats:
                    break
            r.epoch_sizes.append(size)
            epoch += 1
            r.stop = _stop_reason(r, policy)
            if r.stop:
                return r

    return _gc_paused(run)


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


def _contender(ctx: MetricContext, s: dict[str, Any], time_call: TimeCall,
               first: bool = True) -> tuple[_Contender, Optional[float]]:
    """A warmed-up contender for ``ctx`` and its compile time (mode ``compile``); ``first`` resets dynamo (the
    baseline, compiled second, keeps the cell's graphs)."""
    def build() -> Step:
        module = ctx.make_module()
        return Step(maybe_compile(module, ctx.mode, reset=first and not built), module, ctx.make_input(), ctx.pass_)

    built = False
    contender = _Contender(build, time_call, s["min_block_s"], s["short_call_s"], rebuildable=ctx.mode == "eager")
    built = True
    compile_time_s, warmup = None, s["warmup"]
    if ctx.mode == "compile":
        compile_time_s = time_call(lambda: first_call(contender.step, ctx.attention))[0]
        warmup = s["compile_warmup"]
    contender.warm(warmup)
    return contender, compile_time_s


def _cell_row(ctx: MetricContext, r: Rounds, i: int, c: _Contender, policy: Policy, timer_name: str,
              compile_time_s: Optional[float], baseline_label: Optional[str], noisy_rel_ci: float,
              subnormal: dict[str, int]) -> dict[str, Any]:
    """Contender ``i``'s latency columns (and, paired, ``paired_*`` to the rounds' baseline); ``subnormal``: its
    ``subnormal_*`` counts, taken before sampling."""
    row: dict[str, Any] = dict(subnormal)
    row.update(r.summary(i))
    row["latency_cpu_ms"] = [v * 1e3 if v is not None else None for v in r.cpu[i]]
    faults = r.faults[i] if i < len(r.faults) else []
    clean_faults = [f for f, bad in zip(faults, r.preempted[i]) if not bad] or faults
    # the mean, not the median: faults that come in some samples only (a threshold that moved) must show
    row["latency_faults_per_call"] = sum(clean_faults) / len(clean_faults) if clean_faults else math.nan
    if baseline_label is not None and r.baseline is not None and i != r.baseline:
        row["paired_baseline"] = baseline_label
        row.update(r.paired(i))
    if ctx.kind == "model":
        row.update(throughput(ctx.batch, row))
    row.update(latency_timer=timer_name, latency_block=c.block, latency_stop=r.stop,
               latency_spent_s=r.spent_by[i], latency_budget_s=policy.budget_s,
               latency_target_rel_ci=policy.target_rel_ci, latency_rewarm=c.short, latency_processes=1,
               compile_time_s=compile_time_s, threads=torch.get_num_threads())
    return finish_row(row, noisy_rel_ci)


def _run(ctx: MetricContext, s: dict[str, Any]) -> dict[str, Any]:
    timer_name, time_call = _timer(ctx.device)
    cell, compile_time_s = _contender(ctx, s, time_call)
    subnormal = _subnormal_columns(cell.step.module, cell.step.x)
    contenders = [cell]
    baseline = ctx.baseline if s["paired"] else None
    if baseline is not None:
        contenders.append(_contender(baseline, s, time_call, first=False)[0])
    policy = Policy.from_settings(s)
    if s["processes"] > 1:  # this process takes its share; the others run in attnbench.engine.execute's workers
        policy.budget_s /= s["processes"]
    rounds = sample_rounds(contenders, policy)
    return _cell_row(ctx, rounds, 0, cell, policy, timer_name, compile_time_s,
                     baseline.label if baseline is not None else None, s["noisy_rel_ci"], subnormal)


def measure_group(ctxs: Sequence[MetricContext], reported: Sequence[int],
                  droppable: Sequence[int] = ()) -> list[Optional[dict[str, Any]]]:
    """The latency columns of several cells of one shape measured together against one shared baseline.

    ``ctxs[0]`` is the baseline's cell (the suite baseline at this shape, batch, dtype, device, pass and mode) and
    the others are attentions at the same shape, all in eager mode. Every round samples every contender
    (:func:`sample_rounds`): the baseline once when it is the longest call, the shorter ones about
    ``sqrt(longest / own)`` times (:func:`samples_per_round`), spread over the round. Each attention's ratio is its
    round median over the baseline's in the same round, so all of them are paired in time with one series of
    baseline calls instead of re-timing the baseline beside each (docs/metrics.md, "Shared baseline"). Sampling
    stops when every ``reported`` contender's interval is within the target, or at the group's budget:
    ``settings.latency.budget_s`` (the runner gives the sum of its cells' shares), else ``max_time_s`` per
    reported cell.

    Returns, per contender, its row of latency columns (``None`` for a contender that is not reported, or in
    ``droppable`` and failed to build or warm up: its own cell then measures it alone and records the error).
    Every row also has ``latency_group_size`` (contenders), ``latency_per_round`` (its samples per round) and
    ``latency_group_spent_s`` (the whole group's sampling seconds; ``latency_spent_s`` is its own share).
    """
    s = _merge(ctxs[0].settings.get("latency"))
    _validate(s)
    with use_threads(s["threads"]):
        flushing = bool(torch.set_flush_denormal(s["flush_denormal"])) and s["flush_denormal"]
        malloc = _malloc_state(s)
        timer_name, time_call = _timer(ctxs[0].device)
        built: list[Optional[_Contender]] = []
        for i, ctx in enumerate(ctxs):
            try:
                built.append(_contender(ctx, s, time_call, first=i == 0)[0])
            except Exception:  # noqa: BLE001 - a sibling that cannot run is measured (and fails) in its own cell
                if i not in droppable:
                    raise
                built.append(None)
        alive = [i for i, c in enumerate(built) if c is not None]
        contenders = [built[i] for i in alive]
        subnormal = [_subnormal_columns(c.step.module, c.step.x) for c in contenders]
        policy = Policy.from_settings(s)
        policy.budget_s = s["budget_s"] if s["budget_s"] is not None else s["max_time_s"] * max(1, len(reported))
        per_round = samples_per_round([c.call_s * c.block for c in contenders])
        shown = [alive.index(i) for i in reported if i in alive]
        rounds = sample_rounds(contenders, policy, per_round=per_round, baseline=0, reported=shown)
        rows: list[Optional[dict[str, Any]]] = [None] * len(ctxs)
        for j, i in enumerate(alive):
            if i not in reported:
                continue
            row = _cell_row(ctxs[i], rounds, j, contenders[j], policy, timer_name, None,
                            ctxs[0].label if j else None, s["noisy_rel_ci"], subnormal[j])
            row.update(latency_group_size=len(alive), latency_per_round=per_round[j],
                       latency_group_spent_s=rounds.spent_s, flush_denormal=flushing, malloc=malloc)
            rows[i] = row
        return rows


def _malloc_state(s: dict[str, Any]) -> str:
    """Pin glibc's allocator thresholds (``steady_malloc``, default on; :mod:`attnbench.core.malloc_steady`) and
    return the state to record in the ``malloc`` column: what the process runs with, whatever this cell asked
    (pinning cannot be undone within a process)."""
    return malloc_steady.pin() if s["steady_malloc"] else malloc_steady.state()


def _validate(s: dict[str, Any]) -> None:
    """Check a settings dict against :class:`Settings` (what :func:`_merge` returns already passed it)."""
    parse(Settings, s, "settings.latency")


def _merge(given: Any) -> dict[str, Any]:
    """``settings.latency`` over the defaults of :class:`Settings`, validated (the suite's load-time check and this
    run-time read use the same model, so the same message)."""
    return parse(Settings, given, "settings.latency")


def measure(ctx: MetricContext) -> dict[str, Any]:
    """The ``latency_*``, ``paired_*`` (with a baseline), ``compile_time_s``, ``threads``, ``flush_denormal`` and
    ``subnormal_*`` columns of the cell."""
    s = _merge(ctx.settings.get("latency"))
    _validate(s)
    with use_threads(s["threads"]):
        # returns False where the CPU cannot flush (then subnormals stay, and the row says so)
        flushing = bool(torch.set_flush_denormal(s["flush_denormal"])) and s["flush_denormal"]
        malloc = _malloc_state(s)
        return {**_run(ctx, s), "flush_denormal": flushing, "malloc": malloc}
