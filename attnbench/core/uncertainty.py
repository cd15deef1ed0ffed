"""The one owner of "how sure is this timing?": which samples count, which interval a reader uses, the target
the latency metric samples towards, and the noisy flag.

Every reader of a latency row — the metric that writes the flag, the report that prints it, ``compare`` that
judges two runs — goes through this module, so they cannot disagree about the same cell
(docs/metrics.md, "Uncertainty and the noisy flag").

* **The interval a reader uses.** A paired cell (timed interleaved with the suite's baseline) is read through its
  ratio to the baseline, so its uncertainty is the ratio's 95% interval; an unpaired cell (the baseline itself, a
  suite without one) through its median, so the median's 95% interval. :func:`reading_interval`.
* **Relative half-width** of an interval: ``max(estimate − low, high − estimate) / estimate``; ±3% means the
  true value lies within 3% of the estimate on either side at 95% confidence. The latency metric samples until
  it is at most ``target_rel_ci`` (default 0.03) or the cell's budget is spent.
* **Noisy:** the relative half-width above ``noisy_rel_ci`` (default 0.10: the interval is too wide for a verdict
  at the precision the suite asked for), or fewer than :data:`MIN_SAMPLES` clean samples. :func:`is_noisy`.
* **Clean samples:** a CPU sample whose wall time exceeds its process CPU time by more than ``preempt_fraction``
  (default 0.10) of the wall time was preempted (the process was not running for part of it): it stays in the raw
  data (``latency_samples_ms``), is counted (``latency_preempted``), and is left out of every statistic.
  :func:`preempted` and :func:`clean_samples`.

Pure Python: the report and ``compare`` use it without importing torch.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

from . import stats

__all__ = ["TARGET_REL_CI", "NOISY_REL_CI", "PREEMPT_FRACTION", "MIN_SAMPLES", "rel_half_width", "preempted",
           "clean_samples", "clean_ratios", "ratio_interval", "median_interval", "reading_interval", "is_noisy",
           "noisy_reason", "reached_target"]

#: the latency metric's default stopping target: the 95% interval within ±3% of the estimate
TARGET_REL_CI = 0.03
#: above this relative half-width a cell is flagged noisy
NOISY_REL_CI = 0.10
#: a sample whose wall time exceeds its CPU time by more than this fraction of the wall time was preempted
PREEMPT_FRACTION = 0.10
#: fewer clean samples than this: noisy whatever the interval says (the budget never stops a cell before it)
MIN_SAMPLES = 5


def rel_half_width(interval: stats.Interval) -> float:
    """``max(estimate − low, high − estimate) / estimate``; infinite for a non-positive or unknown estimate."""
    est, lo, hi = interval.estimate, interval.low, interval.high
    if not all(math.isfinite(v) for v in (est, lo, hi)) or est <= 0:
        return math.inf
    return max(est - lo, hi - est) / est


def preempted(wall_s: float, cpu_s: Optional[float], threads: int = 1,
              fraction: float = PREEMPT_FRACTION) -> bool:
    """Was the sample preempted? ``cpu_s`` is the process CPU time spent during the sample (None: not known, e.g.
    on CUDA, where the host waits for the device: never judged preempted).

    With one thread a sample that ran all along has CPU time ≈ wall time; a neighbour that took the core for part
    of it leaves the wall time larger. With several threads the process can use more CPU than wall time, so only
    a sample that got less than one core's worth is caught (documented limit)."""
    if cpu_s is None or not math.isfinite(cpu_s) or wall_s <= 0:
        return False
    del threads  # one rule for any thread count: less than one core's worth of CPU for the sample
    return wall_s - cpu_s > fraction * wall_s


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def clean_samples(row: Mapping[str, Any]) -> list[float]:
    """The row's latency samples (ms) that enter its statistics: all of ``latency_samples_ms`` except those its
    ``latency_preempted_mask`` marks (rows written before the mask existed: all of them)."""
    samples = [float(v) for v in _as_list(row.get("latency_samples_ms"))]
    mask = _as_list(row.get("latency_preempted_mask"))
    if len(mask) != len(samples):
        return samples
    return [s for s, bad in zip(samples, mask) if not bad]


def clean_ratios(row: Mapping[str, Any]) -> list[float]:
    """The per-round ratios to the baseline that enter the paired interval (rounds with a preempted sample on
    either side are out: ``paired_preempted_mask``)."""
    ratios = [float(v) for v in _as_list(row.get("paired_ratios"))]
    mask = _as_list(row.get("paired_preempted_mask"))
    if len(mask) != len(ratios):
        return ratios
    return [r for r, bad in zip(ratios, mask) if not bad]


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def ratio_interval(row: Mapping[str, Any]) -> Optional[stats.Interval]:
    """The cell's paired ratio to the baseline with its stored 95% interval; None for an unpaired row."""
    ratio = _num(row.get("paired_ratio"))
    if not math.isfinite(ratio):
        return None
    n = _count(row, "paired_rounds_used", "paired_rounds")
    return stats.Interval(ratio, _num(row.get("paired_ratio_low")), _num(row.get("paired_ratio_high")), n)


def median_interval(row: Mapping[str, Any]) -> Optional[stats.Interval]:
    """The cell's median (ms) with its stored 95% interval; rows stored without one (older runs) get the
    order-statistic interval of their clean samples. None for a row with no latency."""
    median = _num(row.get("latency_ms_median"))
    if not math.isfinite(median):
        return None
    n = _count(row, "latency_n_used", "latency_n")
    lo, hi = _num(row.get("latency_ms_ci_low")), _num(row.get("latency_ms_ci_high"))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        samples = clean_samples(row)
        if samples:
            ci = stats.median_interval(samples)
            lo, hi = ci.low, ci.high
    return stats.Interval(median, lo, hi, n)


def reading_interval(row: Mapping[str, Any]) -> Optional[stats.Interval]:
    """The interval a reader uses for the cell: the paired ratio's where the row has one, else the median's
    (ms); None for a row with no latency."""
    return ratio_interval(row) or median_interval(row)


def _count(row: Mapping[str, Any], used: str, total: str) -> int:
    """The clean count ``used``, or for rows written before preemption was judged (or a frame's NaN), ``total``."""
    for key in (used, total):
        n = _num(row.get(key))
        if math.isfinite(n):
            return int(n)
    return 0


def noisy_reason(row: Mapping[str, Any], noisy_rel_ci: Optional[float] = None) -> Optional[str]:
    """Why the cell is noisy ("±12.0% > ±10%", "3 clean samples < 5"), or None when it is not.

    ``noisy_rel_ci``: the threshold; by default the one the row was measured with (``latency_noisy_rel_ci``),
    else :data:`NOISY_REL_CI`."""
    interval = reading_interval(row)
    if interval is None:
        return None
    limit = noisy_rel_ci
    if limit is None:
        limit = _num(row.get("latency_noisy_rel_ci"))
        limit = limit if math.isfinite(limit) else NOISY_REL_CI
    if interval.n == 0 and _num(row.get("latency_n")) > 0:
        return "every sample preempted"
    if 0 < interval.n < MIN_SAMPLES:
        return f"{interval.n} clean samples < {MIN_SAMPLES}"
    width = rel_half_width(interval)
    if width > limit:
        what = "ratio" if math.isfinite(_num(row.get("paired_ratio"))) else "median"
        return f"{what} ±{width * 100:.1f}% > ±{limit * 100:g}%"
    return None


def is_noisy(row: Mapping[str, Any], noisy_rel_ci: Optional[float] = None) -> bool:
    """The noisy flag of a latency row (see :func:`noisy_reason`); False for a row with no latency."""
    return noisy_reason(row, noisy_rel_ci) is not None


def reached_target(row: Mapping[str, Any]) -> bool:
    """Did the cell reach its stopping target? Its reader's interval within ±``latency_target_rel_ci`` (default
    :data:`TARGET_REL_CI`), whatever stopped the sampling: in a shared-baseline group every cell stops when the last
    one is done or the group's budget is spent. A row without an interval: its ``latency_stop`` says."""
    interval = reading_interval(row)
    if interval is None:
        return row.get("latency_stop") == "target"
    target = _num(row.get("latency_target_rel_ci"))
    return rel_half_width(interval) <= (target if math.isfinite(target) else TARGET_REL_CI)


def count_preempted(mask: Sequence[bool]) -> int:
    return int(sum(bool(m) for m in mask))
