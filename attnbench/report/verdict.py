"""The answer first: which attention wins where, from which resolution it beats the baseline, how each cost scales.

Pure functions over the report's frame (``derive.add_derived``); the rendering is in ``headline.py``.

- **Best per resolution** (:func:`best_by_resolution`): for each run, context (device, dtype, mode, pass, batch)
  and H×W, the attention with the lowest latency, peak memory or MACs. Latency carries noise, so every attention
  whose interval overlaps the best one's is declared tied with it (:func:`interval_winners`): the paired ratio's
  interval to the baseline when every contender has one (the baseline itself is exactly 1), else the 95% interval
  of each median. Memory and MAC counts are deterministic: only exact equality ties.
- **Crossover** (:func:`crossovers`): the first resolution from which an attention's ratio to the baseline is below
  1 — for latency, its whole interval below 1 — at that resolution and at every larger one of the sweep.
- **Scaling exponents** (:func:`scaling_exponents`): the log-log slope k of cost ∝ tokensᵏ
  (:func:`attnbench.core.stats.loglog_fit`, with its t-interval), for latency, memory and MACs, beside the slope of the
  module's own cost model (``macs_analytic``) over the same grids, the attention term's exponent from
  ``keys_per_query`` (cost ∝ N · keys, so k = 1 + slope of keys_per_query) and the asymptotic theory
  (:data:`THEORY`). The cost model fitted over a small range sits between the linear projections and the
  asymptotic term, which is why both are shown.
- **Pareto fronts** (:func:`pareto_min`, :func:`pareto_fronts`, :func:`pareto_front`): the attentions no other
  beats on both of two costs at a resolution (latency vs MACs, memory vs latency); accuracy vs a cost when rows
  carry ``acc_top1`` (there a tie in accuracy counts as equal: ``acc_uncertainty.accuracy_front``).
- **Most accurate** (:func:`accuracy_winner`): the highest top-1 and every attention indistinguishable from it
  (the paired McNemar/Newcombe comparison on per-image correctness, else Newcombe's unpaired interval, and the
  seed-to-seed spread when there are seeds; ``acc_uncertainty.py``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from ..core import stats
from .acc_uncertainty import estimates, most_accurate
from .derive import numeric

__all__ = ["CONTEXT", "THEORY", "Winner", "best_by_resolution", "crossovers", "exact_winners", "first_persistent",
           "accuracy_winner", "interval_winners", "latency_winner", "pareto_front", "pareto_fronts", "pareto_min",
           "ratio_status", "scaling_exponents"]

#: the axes of one latency/memory comparison, besides H×W
CONTEXT = ("run_id", "device", "dtype", "mode", "pass", "batch")
_GRID = ("height", "width")

#: registry name -> (asymptotic exponent of MACs in tokens N, why); the design notes derive each
THEORY = {
    "mhsa": ("2", "every query attends all N keys"),
    "bra": ("2 (4/3)", "n_win fixed: each query reads topk·N/n_win² keys; 4/3 with the region count tuned to N"),
    "dbra": ("2 (4/3)", "routed like BRA: n_win fixed gives 2; 4/3 with the region count tuned to N"),
    "dat": ("2 (1)", "DAT++ samples N/stride² keys; 1 with a fixed key grid"),
    "agent": ("1", "a fixed number of agent tokens"),
}

#: the value column of each compared metric and whether it is per cell (else a count: batch 1, forward)
METRIC_COLUMN = {"latency": "latency_ms_median", "memory": "mem_peak_bytes", "macs": "macs_fvcore"}


@dataclasses.dataclass(frozen=True)
class Winner:
    """The best of one comparison: ``names[0]`` is the best estimate; the others are tied with it.

    Attributes:
        names: the winners, best estimate first.
        basis: what decided: ``paired ratio``, ``median interval`` or ``exact``.
        ratio: the best's ratio to the baseline (NaN when there is none).
    """

    names: tuple[str, ...]
    basis: str
    ratio: float = math.nan

    @property
    def tie(self) -> bool:
        return len(self.names) > 1


def interval_winners(names: Sequence[str], estimate: Sequence[float], low: Sequence[float],
                     high: Sequence[float]) -> tuple[str, ...]:
    """The lowest estimate and every contender whose interval overlaps its interval (a missing interval end is the
    estimate), ordered by estimate."""
    est = np.asarray(estimate, dtype=float)
    lo = np.where(np.isfinite(np.asarray(low, dtype=float)), low, est)
    hi = np.where(np.isfinite(np.asarray(high, dtype=float)), high, est)
    keep = np.isfinite(est)
    if not keep.any():
        return ()
    order = [i for i in np.argsort(est, kind="stable") if keep[i]]
    best = order[0]
    return tuple(str(names[i]) for i in order if lo[i] <= hi[best] and lo[best] <= hi[i])


def exact_winners(names: Sequence[str], values: Sequence[float], higher_is_better: bool = False) -> tuple[str, ...]:
    """Every contender whose value equals the best (deterministic counts tie only when equal)."""
    v = np.asarray(values, dtype=float)
    keep = np.isfinite(v)
    if not keep.any():
        return ()
    best = v[keep].max() if higher_is_better else v[keep].min()
    return tuple(str(n) for n, x in zip(names, v) if x == best)


def latency_winner(rows: pd.DataFrame) -> Optional[Winner]:
    """The latency winner among ``rows`` (one context, one H×W; columns from ``derive._add_latency_intervals``).

    Paired ratios decide when every contender has one (the baseline counts as exactly 1); otherwise the
    intervals of the medians do, so a paired and an unpaired measurement are never mixed.
    """
    rows = rows[numeric(rows, "latency_ms_median").notna()]
    if rows.empty:
        return None
    methods = set(rows["latency_ratio_method"].dropna()) if "latency_ratio_method" in rows else set()
    names = rows["series"].tolist()
    if methods and methods <= {"paired", "baseline"} and "paired" in methods and \
            len(rows) == rows["latency_ratio_method"].notna().sum():
        est, lo, hi = (numeric(rows, c) for c in ("latency_ratio", "latency_ratio_low", "latency_ratio_high"))
        winners, basis = interval_winners(names, est, lo, hi), "paired ratio"
    else:
        est, lo, hi = (numeric(rows, c) for c in ("latency_ms_median", "latency_ci_low", "latency_ci_high"))
        winners, basis = interval_winners(names, est, lo, hi), "median interval"
    ratio = numeric(rows, "latency_ratio")[rows["series"] == winners[0]].iloc[0]
    return Winner(winners, basis, float(ratio))


def accuracy_winner(rows: pd.DataFrame, column: str = "acc_top1") -> Optional[Winner]:
    """The most accurate of ``rows`` (one run, one cell context) and every attention indistinguishable from it
    (:func:`attnbench.report.acc_uncertainty.most_accurate`: paired test, interval, seed spread); ``ratio`` holds
    the best's difference to the baseline in points."""
    found = estimates(rows[rows["status"] == "ok"] if "status" in rows else rows, column)
    names, basis = most_accurate(found)
    if not names:
        return None
    base = rows.loc[rows["is_baseline"].astype(bool), "series"] if "is_baseline" in rows else pd.Series(dtype=str)
    delta = found[names[0]].mean - found[str(base.iloc[0])].mean if len(base) and str(base.iloc[0]) in found \
        else math.nan
    return Winner(names, basis, float(delta))


def _exact_winner(rows: pd.DataFrame, column: str) -> Optional[Winner]:
    values = numeric(rows, column)
    winners = exact_winners(rows["series"].tolist(), values)
    if not winners:
        return None
    ratio = numeric(rows, f"{column}_ratio")[rows["series"] == winners[0]].iloc[0]
    return Winner(winners, "exact", float(ratio))


def _count_rows(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """One row per (run, series, H×W) that has the count (counts do not depend on batch or pass)."""
    rows = frame[numeric(frame, column).notna()]
    return rows.drop_duplicates(["run_id", "series", *_GRID])


def best_by_resolution(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per comparison: the context columns (:data:`CONTEXT`; pass and batch None for ``macs``), H, W,
    tokens and ``winner`` (:class:`Winner`).

    Args:
        metric: ``latency``, ``memory`` or ``macs``.
    """
    column = METRIC_COLUMN[metric]
    if column not in frame.columns:
        return pd.DataFrame(columns=[*CONTEXT, *_GRID, "tokens", "winner"])
    ok = frame[frame["status"] == "ok"]
    if metric == "macs":
        rows, keys = _count_rows(ok, column), ["run_id", *_GRID]
    else:
        rows, keys = ok[numeric(ok, column).notna()], [*CONTEXT, *_GRID]
    records = []
    for key, group in rows.groupby(keys, sort=False, dropna=False):
        winner = latency_winner(group) if metric == "latency" else _exact_winner(group, column)
        if winner is not None:
            record = dict(zip(keys, key))
            records.append({**{c: record.get(c) for c in CONTEXT}, "height": record["height"],
                            "width": record["width"], "tokens": group["tokens"].iloc[0], "winner": winner})
    return pd.DataFrame(records, columns=[*CONTEXT, *_GRID, "tokens", "winner"])


def ratio_status(row: pd.Series, metric: str) -> Optional[str]:
    """``below``/``above`` the baseline (ratio < 1 / > 1, for latency with the whole interval on that side),
    ``tie``, or None when the row has no ratio."""
    if metric == "latency":
        ratio, lo, hi = (float(pd.to_numeric(row.get(c), errors="coerce"))
                         for c in ("latency_ratio", "latency_ratio_low", "latency_ratio_high"))
        if math.isnan(ratio):
            return None
        lo, hi = (ratio if math.isnan(lo) else lo), (ratio if math.isnan(hi) else hi)
        return stats.Interval(ratio, lo, hi, 0).compare_to(1.0)
    ratio = float(pd.to_numeric(row.get(f"{METRIC_COLUMN[metric]}_ratio"), errors="coerce"))
    if math.isnan(ratio):
        return None
    return "below" if ratio < 1 else "above" if ratio > 1 else "tie"


def _cell_status(row: Optional[pd.Series], metric: str) -> Optional[str]:
    """:func:`ratio_status` of a cell, ``"failed"`` for a failed cell (:mod:`attnbench.report.failures`)."""
    if row is None:
        return None
    from .failures import failed_mask

    if bool(failed_mask(row.to_frame().T).iloc[0]):
        return "failed"
    return ratio_status(row, metric)


def first_persistent(statuses: Sequence[Optional[str]]) -> Optional[int]:
    """The first index from which every status is ``below`` (None when the last one is not)."""
    start = None
    for i, status in enumerate(statuses):
        if status == "below":
            start = i if start is None else start
        else:
            start = None
    return start


def crossovers(frame: pd.DataFrame, metric: str = "latency") -> pd.DataFrame:
    """Per context and non-baseline series: ``statuses`` [(H, W, status)] in token order and ``crossover``, the
    (H, W) from which it beats the baseline at every larger resolution (None: not within the sweep).

    A resolution where the cell produced no value breaks the run of wins (nothing says it won there)."""
    column = METRIC_COLUMN[metric]
    if column not in frame.columns or not frame["is_baseline"].any():
        return pd.DataFrame(columns=[*CONTEXT, "series", "statuses", "crossover"])
    records = []
    for key, group in frame.groupby(list(CONTEXT), sort=False, dropna=False):
        if not group["is_baseline"].any():
            continue
        grids = group[list(_GRID) + ["tokens"]].drop_duplicates().sort_values(["tokens", *_GRID])
        for series, rows in group[~group["is_baseline"]].groupby("series", sort=False):
            by_grid = {(r["height"], r["width"]): r for _, r in rows.iterrows()}
            statuses = [(h, w, _cell_status(by_grid.get((h, w)), metric))
                        for h, w in zip(grids["height"], grids["width"])]
            start = first_persistent([s for _, _, s in statuses])
            records.append({**dict(zip(CONTEXT, key)), "series": series, "statuses": statuses,
                            "crossover": None if start is None else statuses[start][:2]})
    return pd.DataFrame(records, columns=[*CONTEXT, "series", "statuses", "crossover"])


def _fit(rows: pd.DataFrame, column: str) -> Optional[stats.Fit]:
    points = pd.DataFrame({"x": numeric(rows, "tokens"), "y": numeric(rows, column)}).dropna()
    points = points.drop_duplicates("x")
    return stats.loglog_fit(points["x"], points["y"]) if len(points) >= 2 else None


def scaling_exponents(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (context, series, quantity) with ``fit`` (:class:`attnbench.core.stats.Fit` or None).

    Quantities: ``latency`` and ``memory`` per context (:data:`CONTEXT`); ``macs_fvcore``, ``macs_analytic`` and
    ``attention_term`` per (run, series), whose context columns other than ``run_id`` are None. The attention
    term's fit is the fit of ``keys_per_query`` with 1 added to the slope (cost ∝ N · keys_per_query)."""
    ok = frame[frame["status"] == "ok"]
    records = []
    for key, group in ok.groupby(list(CONTEXT), sort=False, dropna=False):
        for series, rows in group.groupby("series", sort=False):
            for quantity in ("latency", "memory"):
                records.append({**dict(zip(CONTEXT, key)), "series": series, "attention": rows["attention"].iloc[0],
                                "quantity": quantity, "fit": _fit(rows, METRIC_COLUMN[quantity])})
    for (run_id, series), rows in ok.groupby(["run_id", "series"], sort=False):
        counts = rows.drop_duplicates(list(_GRID))
        base = {c: None for c in CONTEXT} | {"run_id": run_id, "series": series, "attention": rows["attention"].iloc[0]}
        for quantity in ("macs_fvcore", "macs_analytic"):
            records.append({**base, "quantity": quantity, "fit": _fit(counts, quantity)})
        keys = _fit(counts, "keys_per_query")
        if keys is not None:
            s = keys.slope
            keys = stats.Fit(stats.Interval(s.estimate + 1, s.low + 1, s.high + 1, s.n, s.confidence), keys.intercept)
        records.append({**base, "quantity": "attention_term", "fit": keys})
    return pd.DataFrame(records, columns=[*CONTEXT, "series", "attention", "quantity", "fit"])


def pareto_min(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Mask of the points no other point dominates when both ``x`` and ``y`` are costs (lower is better): a point is
    dominated when another is lower-or-equal on both and strictly lower on one."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    better_eq = (x[None, :] <= x[:, None]) & (y[None, :] <= y[:, None])
    strictly = (x[None, :] < x[:, None]) | (y[None, :] < y[:, None])
    return ~(better_eq & strictly).any(axis=1)


def pareto_front(cost: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Mask of the points no other point beats: none has lower-or-equal cost and a higher score.

    Args:
        cost: (N,) lower is better (latency, MACs).
        score: (N,) higher is better (accuracy).
    """
    cost, score = np.asarray(cost, dtype=float), np.asarray(score, dtype=float)
    order = np.lexsort((-score, cost))
    mask = np.zeros(len(cost), dtype=bool)
    best = -np.inf
    for i in order:
        if score[i] > best:
            mask[i], best = True, score[i]
    return mask


#: the two-cost fronts per context and resolution: name -> (x column, y column)
FRONTS = {"latency vs MACs": ("latency_ms_median", "macs_fvcore"),
          "memory vs latency": ("mem_peak_bytes", "latency_ms_median")}


def pareto_fronts(frame: pd.DataFrame) -> pd.DataFrame:
    """Per context, H×W and front kind (:data:`FRONTS`): ``members``, the series on the front ordered by the first
    cost. MACs are the batch-1 forward count of the cell's attention (the same for every pass)."""
    ok = frame[frame["status"] == "ok"]
    records = []
    for key, group in ok.groupby([*CONTEXT, *_GRID], sort=False, dropna=False):
        for kind, (x_col, y_col) in FRONTS.items():
            points = pd.DataFrame({"series": group["series"], "x": numeric(group, x_col),
                                   "y": numeric(group, y_col)}).dropna()
            if len(points) < 2:
                continue
            front = points[pareto_min(points["x"], points["y"])].sort_values("x")
            records.append({**dict(zip([*CONTEXT, *_GRID], key)), "tokens": group["tokens"].iloc[0], "kind": kind,
                            "members": tuple(front["series"])})
    return pd.DataFrame(records, columns=[*CONTEXT, *_GRID, "tokens", "kind", "members"])
