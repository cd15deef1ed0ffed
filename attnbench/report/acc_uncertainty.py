"""How sure an accuracy is, and when two accuracies are a tie: what the tables, the verdict, the Pareto text and the
figures of a report say about top-1/top-5.

One attention's accuracy in one comparison (one run, one cell context; :func:`estimates`): the mean over its
training seeds, their spread (sample standard deviation, the per-seed values) and the 95% Wilson score interval of
its validation accuracy (:func:`attnbench.core.stats.proportion_interval`; with several seeds, at the mean count).

Two attentions (:func:`compare`, difference a − b in points):

- **paired** when both rows carry per-image correctness (``acc_top1_correct``) over the same number of validation
  images: the 2×2 table of (both right, only a, only b, both wrong), summed over the seeds both have; McNemar's
  test on the discordant images (:func:`attnbench.core.stats.mcnemar`) and Newcombe's paired interval of the difference
  (:func:`attnbench.core.stats.paired_proportion_diff_interval`);
- **unpaired** otherwise (old rows, top-5): the correct counts (``acc_top1 · acc_val_n``, summed over seeds) and
  Newcombe's hybrid score interval (:func:`attnbench.core.stats.proportion_diff_interval`);
- **no interval** when a row lacks ``acc_val_n``: nothing can be said about noise; only equal values tie.

With two or more seeds on both sides the seed-to-seed spread is used too: the Welch t-interval of the per-seed
accuracies (:func:`attnbench.core.stats.welch_diff_interval`). **Tie** ("indistinguishable"): an interval of the
difference holds 0 — the image-level one, or the seed-level one when there is one. A difference is called only
when every available interval excludes 0.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from ..core import stats
from ..core.correct_bits import decode_bits, paired_counts

__all__ = ["AccEstimate", "AccDiff", "accuracy_front", "compare", "estimates", "fmt_acc", "fmt_acc_diff",
           "most_accurate", "add_accuracy_uncertainty", "BITS_COLUMN"]

#: the packed per-image top-1 correctness (:mod:`attnbench.core.correct_bits`)
BITS_COLUMN = "acc_top1_correct"
#: the report's accuracy columns (percent)
ACC_COLUMNS = ("acc_top1", "acc_top5")


@dataclasses.dataclass(frozen=True)
class AccEstimate:
    """One attention's accuracy (percent) in one comparison.

    Attributes:
        name: its series (row name).
        per_seed: seed -> accuracy; the seed is None for a row of a suite without ``seeds``.
        n: validation images (None: the row does not say).
        bits: seed -> per-image correctness (top-1 only; absent for old rows).
    """

    name: str
    per_seed: dict
    n: Optional[int]
    bits: dict = dataclasses.field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.per_seed.values())))

    @property
    def std(self) -> float:
        """Sample standard deviation over the seeds (NaN with one seed)."""
        values = list(self.per_seed.values())
        return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson interval (percent) at the mean accuracy and ``n`` images; NaN without ``n``."""
        if not self.n:
            return math.nan, math.nan
        lo, hi = stats.proportion_interval(min(self.n, max(0.0, self.mean * self.n / 100)), self.n)
        return 100 * lo, 100 * hi

    def count(self, seed) -> int:
        return int(round(self.per_seed[seed] * self.n / 100))


@dataclasses.dataclass(frozen=True)
class AccDiff:
    """a − b in points with its 95% interval.

    Attributes:
        method: ``paired`` (McNemar + Newcombe's paired interval), ``unpaired`` (Newcombe's hybrid score) or
            ``none`` (no validation size: no interval).
        p_value: McNemar's two-sided p (paired only; NaN otherwise).
        seed_low, seed_high: the Welch interval over seeds (NaN unless both sides have >= 2 seeds).
    """

    diff: float
    low: float
    high: float
    method: str
    p_value: float = math.nan
    seed_low: float = math.nan
    seed_high: float = math.nan

    @property
    def tie(self) -> bool:
        """Indistinguishable: an interval of the difference holds 0 (without any interval: the values are equal)."""
        if self.method == "none":
            return self.diff == 0
        holds = self.low <= 0 <= self.high
        if not math.isnan(self.seed_low):
            holds = holds or self.seed_low <= 0 <= self.seed_high
        return holds


def _seed_of(row: pd.Series) -> Optional[int]:
    """The row's seed from a ``seeds`` list (its identity column), else None (the run trained one seed)."""
    value = pd.to_numeric(pd.Series([row.get("seed")]), errors="coerce").iloc[0]
    return None if pd.isna(value) else int(value)


def _n_of(rows: pd.DataFrame) -> Optional[int]:
    if "acc_val_n" not in rows:
        return None
    values = pd.to_numeric(rows["acc_val_n"], errors="coerce").dropna()
    return int(values.iloc[-1]) if len(values) and (values == values.iloc[-1]).all() else None


def estimates(rows: pd.DataFrame, column: str = "acc_top1", name: str = "series") -> dict[str, AccEstimate]:
    """name -> :class:`AccEstimate` of the rows of one comparison (one row per attention and seed; a later row
    of the same attention and seed replaces an earlier one)."""
    out: dict[str, AccEstimate] = {}
    if column not in rows:
        return out
    for key, part in rows[pd.to_numeric(rows[column], errors="coerce").notna()].groupby(name, sort=False):
        per_seed, bits = {}, {}
        n = _n_of(part)
        for _, row in part.iterrows():
            seed = _seed_of(row)
            per_seed[seed] = float(row[column])
            text = row.get(BITS_COLUMN)
            if column == "acc_top1" and n and isinstance(text, str):
                try:
                    bits[seed] = decode_bits(text, n)
                except ValueError:
                    bits.pop(seed, None)  # damaged or from another validation size: compared unpaired
        out[str(key)] = AccEstimate(str(key), per_seed, n, bits)
    return out


def compare(a: AccEstimate, b: AccEstimate) -> AccDiff:
    """a − b (points): paired where both have per-image correctness for common seeds, else unpaired, plus the
    seed-level Welch interval when both have >= 2 seeds."""
    seed_low = seed_high = math.nan
    if len(a.per_seed) > 1 and len(b.per_seed) > 1:
        _, lo, hi = stats.welch_diff_interval(list(a.per_seed.values()), list(b.per_seed.values()))
        seed_low, seed_high = 100 * lo, 100 * hi
    common = [s for s in a.bits if s in b.bits and a.n == b.n]
    if common:
        table = np.sum([paired_counts(a.bits[s], b.bits[s]) for s in common], axis=0)
        diff, lo, hi = stats.paired_proportion_diff_interval(*map(int, table))
        return AccDiff(100 * diff, 100 * lo, 100 * hi, "paired", stats.mcnemar(int(table[1]), int(table[2])),
                       seed_low, seed_high)
    if a.n and b.n:
        k1, k2 = sum(a.count(s) for s in a.per_seed), sum(b.count(s) for s in b.per_seed)
        diff, lo, hi = stats.proportion_diff_interval(k1, a.n * len(a.per_seed), k2, b.n * len(b.per_seed))
        return AccDiff(100 * diff, 100 * lo, 100 * hi, "unpaired", math.nan, seed_low, seed_high)
    return AccDiff(a.mean - b.mean, math.nan, math.nan, "none", math.nan, seed_low, seed_high)


def most_accurate(found: dict[str, AccEstimate]) -> tuple[tuple[str, ...], str]:
    """(the highest mean and every attention indistinguishable from it, highest first; the basis: ``paired
    test``, ``interval`` or ``exact``, with `` + seed spread`` when the seed-level interval took part)."""
    if not found:
        return (), "exact"
    order = sorted(found.values(), key=lambda e: -e.mean)
    best = order[0]
    diffs = {e.name: compare(best, e) for e in order[1:]}
    methods = {d.method for d in diffs.values()}
    basis = "paired test" if methods == {"paired"} else "exact" if methods <= {"none"} else "interval"
    if any(not math.isnan(d.seed_low) for d in diffs.values()):
        basis += " + seed spread"
    return (best.name, *[e.name for e in order[1:] if diffs[e.name].tie]), basis


def accuracy_front(found: dict[str, AccEstimate], cost: dict[str, float]) -> list[str]:
    """The attentions no other one beats on accuracy vs cost when a tie counts as equal accuracy: j beats i when it
    costs no more and is clearly more accurate, or costs less and ties. Ordered by cost."""
    names = [n for n in found if n in cost and np.isfinite(cost[n])]

    def beaten(i: str) -> bool:
        for j in names:
            if j == i or cost[j] > cost[i]:
                continue
            d = compare(found[j], found[i])
            if (not d.tie and d.diff > 0) or (d.tie and cost[j] < cost[i]):
                return True
        return False

    return sorted((n for n in names if not beaten(n)), key=lambda n: cost[n])


# ------------------------------------------------------------------------------------------ the report frame

def add_accuracy_uncertainty(frame: pd.DataFrame, keys: Sequence[str]) -> None:
    """Per accuracy column ``c`` present: ``c_mean``, ``c_std``, ``c_seeds`` (how many), ``c_low``/``c_high``
    (Wilson, percent), and against the run's baseline at the same cell ``keys`` (``derive.CELL_KEYS``)
    ``c_delta`` (mean difference, points; replaces the single-row delta), ``c_delta_low``/``c_delta_high``,
    ``c_delta_p``, ``c_delta_method`` and ``c_tie`` (True/False; None without a baseline)."""
    for column in [c for c in ACC_COLUMNS if c in frame.columns]:
        values = pd.to_numeric(frame[column], errors="coerce")
        new = {k: pd.Series(np.nan, index=frame.index, dtype="float64")
               for k in ("mean", "std", "seeds", "low", "high", "delta", "delta_low", "delta_high", "delta_p")}
        method = pd.Series(None, index=frame.index, dtype=object)
        tie = pd.Series(None, index=frame.index, dtype=object)
        rows = frame[values.notna() & (frame["status"] == "ok")]
        for _, group in rows.groupby([k for k in keys if k in rows.columns], sort=False, dropna=False):
            found = estimates(group, column)
            base_names = group.loc[group["is_baseline"].astype(bool), "series"] if "is_baseline" in group else []
            base = found.get(str(base_names.iloc[0])) if len(base_names) else None
            for name, est in found.items():
                at = group.index[group["series"] == name]
                lo, hi = est.interval
                for k, v in (("mean", est.mean), ("std", est.std), ("seeds", len(est.per_seed)), ("low", lo),
                             ("high", hi)):
                    new[k][at] = v
                if base is not None:
                    d = compare(est, base) if est is not base else AccDiff(0.0, 0.0, 0.0, "baseline")
                    for k, v in (("delta", d.diff), ("delta_low", d.low), ("delta_high", d.high),
                                 ("delta_p", d.p_value)):
                        new[k][at] = v
                    for i in at:
                        method[i], tie[i] = d.method, (True if d.method == "baseline" else d.tie)
        for k, series in new.items():
            frame[f"{column}_{k}"] = series
        frame[f"{column}_delta_method"], frame[f"{column}_tie"] = method, tie


def _num(value) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def fmt_acc(mean: float, low: float, high: float, std: float = math.nan, seeds: int = 1,
            per_seed: Sequence[float] = ()) -> str:
    """``84.10 [81.82–86.16]``; with several seeds ``84.10 ± 0.30 sd, 3 seeds [81.82–86.16]`` (and the per-seed
    values when given)."""
    text = f"{mean:.2f}"
    if seeds and seeds > 1 and not math.isnan(std):
        text += f" ± {std:.2f} sd, {int(seeds)} seeds"
        if len(per_seed):
            text += " (" + ", ".join(f"{v:.2f}" for v in per_seed) + ")"
    if not (math.isnan(low) or math.isnan(high)):
        text += f" [{low:.2f}–{high:.2f}]"
    return text


def fmt_acc_diff(diff: float, low: float, high: float, method: Optional[str], p_value: float = math.nan,
                 tie: Optional[bool] = None) -> str:
    """``+0.60 pt [−1.2, +2.4], tie`` / ``+10.00 pt [+6.9, +13.1], McNemar p = 2e-09`` / ``+0.60 pt`` (no
    interval)."""
    if diff is None or math.isnan(_num(diff)):
        return ""
    text = f"{diff:+.2f} pt"
    if method in ("paired", "unpaired") and not (math.isnan(_num(low)) or math.isnan(_num(high))):
        text += f" [{low:+.1f}, {high:+.1f}]"
        if tie:
            text += ", tie"
        elif not math.isnan(_num(p_value)):
            text += f", McNemar p = {p_value:.2g}"
    return text
