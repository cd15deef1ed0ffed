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
import functools
import math
from typing import Optional, Sequence

import numpy as np

__all__ = ["Interval", "Change", "Fit", "median_interval", "paired_ratio", "ratio_of_medians", "detect_change",
           "mann_whitney_p", "loglog_fit", "epoch_interval", "epoch_mean_interval", "CONFIDENCE",
           "N_BOOT"]

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
    x = np.sort(_clean(values, "median_interval"))
    n = x.size
    j = _median_rank(n, confidence)
    return Interval(float(np.median(x)), float(x[j - 1]), float(x[n - j]), n, _median_coverage(n, j))


@functools.lru_cache(maxsize=4096)
def _median_rank(n: int, confidence: float) -> int:
    """The largest rank j with ``[x_(j), x_(n+1-j)]`` missing the median with probability at most 1 − confidence
    (2·P(B <= j-1), B ~ Binomial(n, 1/2)); 1, the full range, when none is."""
    from scipy import stats

    if n < 2:
        return 1
    cdf = stats.binom.cdf(np.arange((n + 1) // 2), n, 0.5)  # cdf[i] = P(B <= i)
    ok = np.nonzero(cdf <= (1 - confidence) / 2)[0]          # i = j - 1 with a miss probability within bounds
    return int(ok[-1]) + 1 if ok.size else 1


def _median_coverage(n: int, j: int) -> float:
    from scipy import stats

    return 1 - 2 * float(stats.binom.cdf(j - 1, n, 0.5)) if n > 1 else 0.0


def _finite_groups(groups: Sequence[Sequence[float]], what: str) -> list[np.ndarray]:
    """Each group's finite values, empty groups dropped; a ValueError naming ``what`` when nothing is left."""
    kept = [np.asarray(g, dtype=np.float64) for g in groups]
    kept = [g[np.isfinite(g)] for g in kept]
    kept = [g for g in kept if g.size]
    if not kept:
        raise ValueError(f"{what}: no finite values")
    return kept


def _t_half_width(values: np.ndarray, confidence: float) -> float:
    """The Student-t half-width of the mean of ``values``: ``t(n−1) · s / √n``."""
    from scipy import stats

    n = len(values)
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(np.std(values, ddof=1)) / math.sqrt(n)


def epoch_interval(groups: Sequence[Sequence[float]], confidence: float = CONFIDENCE) -> Interval:
    """The median of all values with an interval that carries the spread *between* groups (epochs, processes).

    Each group is a run of consecutive samples (an epoch of the latency metric, or one worker process). The
    estimate is the pooled median. The interval is the Student-t interval of the mean of the groups' log medians,
    ``±t(E−1) · s / √E`` with ``s`` their standard deviation, moved to sit around the pooled median
    (``median · exp(±half)``), and never narrower than the order-statistic interval of the pooled median
    (:func:`median_interval`), which is all there is with fewer than two groups. Slow drifts, layout effects and
    load changes move whole groups, so they widen this interval, where a bootstrap of the pooled samples would
    treat them as independent noise and stay narrow (the runs-disagree-with-their-intervals failure of issue 17).
    """
    kept = _finite_groups(groups, "epoch_interval")
    pooled = np.concatenate(kept)
    within = median_interval(pooled, confidence)
    medians = np.array([np.median(g) for g in kept])
    if len(kept) < 2 or np.any(medians <= 0):
        return within
    half = _t_half_width(np.log(medians), confidence)
    est = within.estimate
    return Interval(est, min(within.low, est * math.exp(-half)), max(within.high, est * math.exp(half)),
                    int(pooled.size), confidence)


def epoch_mean_interval(groups: Sequence[Sequence[float]], confidence: float = CONFIDENCE) -> Interval:
    """The geometric mean of the groups' medians with its Student-t interval: ``exp(mean ± t(E−1) · s / √E)`` of
    the ``E`` log medians (``s`` their standard deviation). Estimate and interval are of one statistic, so the
    interval is as wide as the groups disagree and no wider.

    The latency metric's paired ratio (:func:`attnbench.metrics.latency.summarize_paired`). Why not
    :func:`epoch_interval`: its estimate is the pooled median, and its floor is the order-statistic interval of that
    median, which for rounds that fall into two speed modes (a rebuilt module at one of a few speeds) spans both
    modes however many epochs agree on their mean. On the resolution sweep's three runs of 2026-12-06 (AMD EPYC)
    the floor alone made 23, 32 and 25 of 64 ratios noisy against 9, 10 and 4 with this interval; the two quiet runs'
    estimates differed by a median 5.0% against 6.4%, and the differences fell inside the two runs' combined
    intervals about as often (43 against 46 of 64; docs/metrics.md, "Verdicts on a machine we did not tune on").
    Fewer than two groups with a positive median: the pooled median's order-statistic interval."""
    kept = _finite_groups(groups, "epoch_mean_interval")
    medians = np.array([np.median(g) for g in kept])
    if len(kept) < 2 or np.any(medians <= 0):
        return median_interval(np.concatenate(kept), confidence)
    logs = np.log(medians)
    centre, half = float(np.mean(logs)), _t_half_width(logs, confidence)
    n = int(sum(g.size for g in kept))
    return Interval(math.exp(centre), math.exp(centre - half), math.exp(centre + half), n, confidence)


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


# ------------------------------------------------------------------------------------ proportions (accuracy)
# Accuracy is a count of correct images out of n: the intervals below are for binomial proportions, the paired
# ones for two classifiers scored on the same images (docs/accuracy.md gives the formulas and the references).
__all__ += ["wilson_interval", "mcnemar", "paired_proportion_diff_interval", "welch_diff_interval",
            "proportion_interval", "proportion_diff_interval"]

def _z(conf: float) -> float:
    from scipy import stats

    if not 0 < conf < 1:
        raise ValueError(f"conf={conf!r}: expected a confidence between 0 and 1")
    return float(stats.norm.ppf(0.5 + conf / 2))


def _check_count(k: int, n: int, what: str) -> None:
    if n <= 0 or k < 0 or k > n:
        raise ValueError(f"{what}: expected 0 <= k <= n and n > 0, got k={k}, n={n}")


def wilson_interval(k: int, n: int, conf: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of the proportion k/n (Wilson 1927; Newcombe 1998, method 3): the p whose score
    test ``|k/n − p| / sqrt(p(1 − p)/n)`` stays below z. Never outside [0, 1], sensible at k = 0 and k = n."""
    _check_count(k, n, "wilson_interval")
    z = _z(conf)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar(b: int, c: int, exact: Optional[bool] = None) -> float:
    """Two-sided McNemar p-value from the discordant pairs: ``b`` images only the first classifier got right, ``c``
    only the second.

    ``exact`` (default: when b + c < 25): the conditional binomial test, ``min(1, 2·P(X <= min(b, c)))`` with
    X ~ Binomial(b + c, ½); otherwise the χ² statistic with Edwards' continuity correction,
    ``(|b − c| − 1)² / (b + c)`` on 1 degree of freedom. No discordant pair: p = 1.
    """
    from scipy import stats

    if b < 0 or c < 0:
        raise ValueError(f"mcnemar: expected counts >= 0, got b={b}, c={c}")
    m = b + c
    if m == 0:
        return 1.0
    if exact if exact is not None else m < 25:
        return float(min(1.0, 2 * stats.binom.cdf(min(b, c), m, 0.5)))
    chi2 = (abs(b - c) - 1) ** 2 / m if abs(b - c) > 1 else 0.0
    return float(stats.chi2.sf(chi2, 1))


def paired_proportion_diff_interval(a: int, b: int, c: int, d: int,
                                    conf: float = CONFIDENCE) -> tuple[float, float, float]:
    """Difference p1 − p2 of two proportions measured on the same n = a + b + c + d items, with Newcombe's
    interval for paired data (Newcombe 1998b, method 10: Wilson limits of p1 and p2 combined with the φ
    correlation correction).

    Args:
        a: both right; b: only the first right; c: only the second right; d: both wrong.

    Returns:
        (diff, low, high), diff = (b − c) / n.
    """
    n = a + b + c + d
    if min(a, b, c, d) < 0 or n == 0:
        raise ValueError(f"paired_proportion_diff_interval: expected counts >= 0 with n > 0, got {(a, b, c, d)}")
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, conf)
    l2, u2 = wilson_interval(a + c, n, conf)
    spread = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    # the correlation of the two verdicts, with Newcombe's continuity-type shrinkage towards 0
    shrunk = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = shrunk / math.sqrt(spread) if spread > 0 else 0.0
    dl1, du1, dl2, du2 = p1 - l1, u1 - p1, p2 - l2, u2 - p2
    diff = p1 - p2
    low = diff - math.sqrt(max(0.0, dl1 ** 2 - 2 * phi * dl1 * du2 + du2 ** 2))
    high = diff + math.sqrt(max(0.0, dl2 ** 2 - 2 * phi * dl2 * du1 + du1 ** 2))
    return diff, max(-1.0, low), min(1.0, high)


def welch_diff_interval(x: Sequence[float], y: Sequence[float],
                        conf: float = CONFIDENCE) -> tuple[float, float, float]:
    """mean(x) − mean(y) of two small independent samples (e.g. one accuracy per training seed) with the Welch
    t-interval (unequal variances, Welch-Satterthwaite degrees of freedom). Needs >= 2 values in each; when both
    have no spread the interval is the difference itself."""
    from scipy import stats

    xa, ya = _clean(x, "welch_diff_interval x"), _clean(y, "welch_diff_interval y")
    if xa.size < 2 or ya.size < 2:
        raise ValueError(f"welch_diff_interval: needs >= 2 values per sample, got {xa.size} and {ya.size}")
    diff = float(xa.mean() - ya.mean())
    vx, vy = float(xa.var(ddof=1)) / xa.size, float(ya.var(ddof=1)) / ya.size
    if vx + vy == 0:
        return diff, diff, diff
    df = (vx + vy) ** 2 / (vx ** 2 / (xa.size - 1) + vy ** 2 / (ya.size - 1))
    half = float(stats.t.ppf(0.5 + conf / 2, df)) * math.sqrt(vx + vy)
    return diff, diff - half, diff + half


# The two unpaired functions below keep these names and signatures (another branch adds the same pair): keep them
# last in this file.

def proportion_interval(k: int, n: int, conf: float = CONFIDENCE) -> tuple[float, float]:
    """95% (``conf``) interval of the proportion k/n: the Wilson score interval (:func:`wilson_interval`)."""
    return wilson_interval(k, n, conf)


def proportion_diff_interval(k1: int, n1: int, k2: int, n2: int,
                             conf: float = CONFIDENCE) -> tuple[float, float, float]:
    """k1/n1 − k2/n2 of two independent samples with Newcombe's hybrid score interval (Newcombe 1998a, method
    10: each proportion's Wilson limits, combined by square-and-add). Returns (diff, low, high)."""
    _check_count(k1, n1, "proportion_diff_interval (first)")
    _check_count(k2, n2, "proportion_diff_interval (second)")
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, conf)
    l2, u2 = wilson_interval(k2, n2, conf)
    diff = p1 - p2
    low = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return diff, max(-1.0, low), min(1.0, high)
