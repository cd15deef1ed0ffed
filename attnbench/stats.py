"""The statistics behind every number attnbench prints with an uncertainty: intervals, paired ratios, change tests
and log-log fits. Pure numpy/scipy, no torch, so the report and ``compare`` can use it.

Methods (the reasons are in ../shared/design/paired-measurement.md and docs/metrics.md):

- :func:`median_interval`: the distribution-free order-statistic confidence interval of a median (the ranks come
  from the Binomial(n, 1/2) distribution, so the coverage is at least the confidence for any distribution).
- :func:`paired_ratio`: the median of the per-round ratios ``a_i / b_i`` of samples taken interleaved (A B A B …),
  with the percentile-bootstrap interval of that median (Kalibera & Jones, "Rigorous benchmarking in reasonable
  time", ISMM 2013). Pairing cancels slow phases of the machine that hit both contenders in the same round.
- :func:`ratio_of_medians`: for two independent sample sets (two runs): ``median(new) / median(base)`` with a
  bootstrap interval that resamples each set on its own.
- :func:`detect_change`: the rule of ``attnbench compare`` and the CI gate: a change is reported only when it is
  past the threshold **and** statistically clear — the whole 95% bootstrap interval of the ratio lies beyond
  1 ± threshold, and the two-sided Mann-Whitney U test on the raw samples gives p < ``alpha`` (asv's rule).
  Requiring the interval, not just the point estimate, to clear the threshold keeps the false-alarm rate low even
  when a comparison covers many cells.
- :func:`loglog_fit`: least squares of ``log(y) = k log(x) + c`` with the t-interval of the slope ``k``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

__all__ = ["Interval", "Change", "Fit", "median_interval", "paired_ratio", "ratio_of_medians", "detect_change",
           "mann_whitney_p", "loglog_fit", "proportion_interval", "proportion_diff_interval", "CONFIDENCE", "N_BOOT"]

#: the confidence of every interval attnbench prints
CONFIDENCE = 0.95
#: bootstrap resamples (the interval ends move by well under 1% between seeds at this count)
N_BOOT = 2000


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval ``[low, high]`` from ``n`` values."""

    estimate: float
    low: float
    high: float
    n: int
    confidence: float = CONFIDENCE

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def compare_to(self, value: float = 1.0) -> str:
        """``"below"`` / ``"above"`` when the whole interval is on one side of ``value``, else ``"tie"``."""
        if self.high < value:
            return "below"
        if self.low > value:
            return "above"
        return "tie"

    def overlaps(self, other: "Interval") -> bool:
        return self.low <= other.high and other.low <= self.high

    @property
    def relative_width(self) -> float:
        """(high − low) / estimate: how sure the estimate is, as a fraction of itself."""
        return (self.high - self.low) / self.estimate if self.estimate else math.inf


def _clean(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise ValueError(f"{what}: no finite values")
    return arr


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The sample median with its order-statistic confidence interval.

    The interval is ``[x_(j), x_(k)]`` (1-based order statistics) with the symmetric ranks ``j = n + 1 − k`` that
    give a Binomial(n, ½) coverage of at least ``confidence``. For n < 6 no such pair exists at 95%; the interval is
    then the full range and its coverage is ``1 − 2^(1−n)`` (stated by :attr:`Interval.confidence`).
    """
    from scipy import stats

    x = np.sort(_clean(values, "median_interval"))
    n = x.size
    alpha_half = (1 - confidence) / 2
    # [x_(j), x_(n+1-j)] misses the median with probability 2·P(B <= j-1), B ~ Binomial(n, 1/2): take the
    # largest such j whose miss probability is within 1 - confidence (j = 1, the full range, when none is)
    j = 1
    while j + 1 <= (n + 1) // 2 and stats.binom.cdf(j, n, 0.5) <= alpha_half:
        j += 1
    coverage = 1 - 2 * float(stats.binom.cdf(j - 1, n, 0.5)) if n > 1 else 0.0
    return Interval(float(np.median(x)), float(x[j - 1]), float(x[n - j]), n, coverage)


def _bootstrap_median(samples: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of ``n_boot`` resamples (with replacement) of ``samples``, vectorised."""
    idx = rng.integers(0, samples.size, size=(n_boot, samples.size))
    return np.median(samples[idx], axis=1)


def _percentiles(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_ratio(a: Sequence[float], b: Sequence[float], *, confidence: float = CONFIDENCE, n_boot: int = N_BOOT,
                 seed: int = 0) -> Interval:
    """Median of the per-round ratios ``a[i] / b[i]`` of interleaved samples, with a percentile-bootstrap interval.

    Args:
        a, b: times of the contender and of the baseline, round by round (same length, both > 0).
    """
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(f"paired_ratio: a and b must be 1-D of one length, got {a_arr.shape} and {b_arr.shape}")
    if a_arr.size == 0 or np.any(b_arr <= 0) or np.any(a_arr <= 0):
        raise ValueError("paired_ratio: needs at least one round and positive times")
    return ratio_interval(a_arr / b_arr, confidence=confidence, n_boot=n_boot, seed=seed)


def ratio_interval(ratios: Sequence[float], *, confidence: float = CONFIDENCE, n_boot: int = N_BOOT,
                   seed: int = 0) -> Interval:
    """The median of per-round ratios (already divided) with its percentile-bootstrap interval."""
    r = _clean(ratios, "ratio_interval")
    rng = np.random.default_rng(seed)
    lo, hi = _percentiles(_bootstrap_median(r, n_boot, rng), confidence) if r.size > 1 else (r[0], r[0])
    return Interval(float(np.median(r)), lo, hi, int(r.size), confidence)


def ratio_of_medians(base: Sequence[float], new: Sequence[float], *, confidence: float = CONFIDENCE,
                     n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """``median(new) / median(base)`` of two independent sample sets, each resampled on its own (bootstrap)."""
    b, n = _clean(base, "ratio_of_medians base"), _clean(new, "ratio_of_medians new")
    rng = np.random.default_rng(seed)
    boot = _bootstrap_median(n, n_boot, rng) / _bootstrap_median(b, n_boot, rng)
    lo, hi = _percentiles(boot, confidence)
    return Interval(float(np.median(n) / np.median(b)), lo, hi, int(min(b.size, n.size)), confidence)


def mann_whitney_p(base: Sequence[float], new: Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value of the raw samples (1.0 when either set has fewer than 2 values)."""
    from scipy import stats

    b, n = _clean(base, "mann_whitney base"), _clean(new, "mann_whitney new")
    if b.size < 2 or n.size < 2:
        return 1.0
    if np.all(b == b[0]) and np.all(n == n[0]) and b[0] == n[0]:
        return 1.0
    return float(stats.mannwhitneyu(n, b, alternative="two-sided").pvalue)


@dataclasses.dataclass(frozen=True)
class Change:
    """What :func:`detect_change` found.

    Attributes:
        ratio: new/base with its interval.
        p_value: two-sided Mann-Whitney U on the raw samples (``nan`` for paired rounds, where the interval alone
            decides).
        verdict: ``"slower"``/``"faster"`` (past the threshold and clear), ``"slower?"``/``"faster?"`` (past the
            threshold, not clear of the noise), or ``"same"``.
    """

    ratio: Interval
    p_value: float
    verdict: str

    @property
    def regressed(self) -> bool:
        return self.verdict == "slower"


def classify_ratio(ratio: Interval, threshold: float, clear: bool) -> str:
    """The verdict for a ratio (new/base, lower is faster): ``slower``/``faster`` when the whole interval is past
    1 ± threshold and ``clear`` (the rank test agrees); ``slower?``/``faster?`` when only the estimate is."""
    if ratio.estimate > 1 + threshold:
        return "slower" if clear and ratio.low > 1 + threshold else "slower?"
    if ratio.estimate < 1 - threshold:
        return "faster" if clear and ratio.high < 1 - threshold else "faster?"
    return "same"


def detect_change(base: Sequence[float], new: Sequence[float], threshold: float, *, alpha: float = 0.01,
                  paired: bool = False, seed: int = 0) -> Change:
    """Did ``new`` get slower or faster than ``base`` by more than ``threshold`` (a fraction), clearly?

    Independent samples (two runs): ratio of medians with a two-set bootstrap interval, and a Mann-Whitney U test
    at ``alpha``; both must agree. Paired samples (interleaved rounds, ``paired=True``): the per-round ratio's
    median with its bootstrap interval; the interval must exclude 1.
    """
    if threshold < 0:
        raise ValueError(f"threshold={threshold} must be >= 0")
    if paired:
        ratio = paired_ratio(new, base, seed=seed)
        return Change(ratio, math.nan, classify_ratio(ratio, threshold, clear=True))
    ratio = ratio_of_medians(base, new, seed=seed)
    p = mann_whitney_p(base, new)
    return Change(ratio, p, classify_ratio(ratio, threshold, clear=p < alpha))


@dataclasses.dataclass(frozen=True)
class Fit:
    """``log(y) = slope · log(x) + intercept`` with the slope's interval."""

    slope: Interval
    intercept: float

    def predict(self, x: float) -> float:
        return math.exp(self.intercept) * x ** self.slope.estimate


def loglog_fit(x: Sequence[float], y: Sequence[float], confidence: float = CONFIDENCE) -> Optional[Fit]:
    """Least-squares slope of log(y) on log(x) with its Student-t interval; ``None`` with fewer than 2 points.

    Two points give the exact slope with an infinite interval (no degrees of freedom left for the error).
    """
    from scipy import stats

    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(xa) & np.isfinite(ya) & (xa > 0) & (ya > 0)
    lx, ly = np.log(xa[keep]), np.log(ya[keep])
    n = lx.size
    if n < 2 or np.ptp(lx) == 0:
        return None
    slope, intercept = np.polyfit(lx, ly, 1)
    if n == 2:
        return Fit(Interval(float(slope), -math.inf, math.inf, n, confidence), float(intercept))
    resid = ly - (slope * lx + intercept)
    se = math.sqrt(float(resid @ resid) / (n - 2) / float(((lx - lx.mean()) ** 2).sum()))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 2)) * se
    return Fit(Interval(float(slope), float(slope - half), float(slope + half), n, confidence), float(intercept))


def _z(conf: float) -> float:
    from scipy import stats

    return float(stats.norm.ppf(0.5 + conf / 2))


def proportion_interval(k: int, n: int, conf: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (e.g. top-1 hits over validation images), in proportion
    units. Unlike the normal approximation it stays inside [0, 1] and keeps its coverage near 0 and 1."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"proportion_interval: expected 0 <= k <= n and n > 0, got k={k}, n={n}")
    z = _z(conf)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion_diff_interval(k1: int, n1: int, k2: int, n2: int,
                             conf: float = CONFIDENCE) -> tuple[float, float, float]:
    """``p1 − p2`` of two independent proportions with Newcombe's hybrid score interval (method 10 of Newcombe,
    Statistics in Medicine 17, 1998): each proportion's Wilson interval ``[l_i, u_i]`` gives
    ``δ = sqrt((p1 − l1)² + (u2 − p2)²)`` and ``ε = sqrt((u1 − p1)² + (p2 − l2)²)``, the interval
    ``[p1 − p2 − δ, p1 − p2 + ε]``. Returns (difference, low, high) in proportion units."""
    l1, u1 = proportion_interval(k1, n1, conf)  # raises on counts that are not proportions
    l2, u2 = proportion_interval(k2, n2, conf)
    p1, p2 = k1 / n1, k2 / n2
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
