"""Columns the report computes from the rows: series names, baseline ratios, achieved GFLOP/s.

Ratio to the baseline: a cell's value divided by the value of the run's baseline attention (manifest
``suite.baseline``, default ``mhsa``) in the same run at the same H×W, batch, dtype, device, pass and mode. Params
and FLOP counts are measured at batch 1 for the forward pass whatever the cell, so they are matched on H×W only.
Accuracy is compared as a difference in percentage points, not a ratio.

Achieved GFLOP/s = 2 · macs_fvcore · batch · k / latency, with k = 1 for ``forward`` and k = 3 for
``forward_backward`` (the usual convention: the backward pass costs about twice the forward). It is a figure of
merit for how well an implementation uses the hardware, not a measured count.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..core import stats
from .acc_uncertainty import add_accuracy_uncertainty
from .load import Runs

__all__ = [
    "CELL_KEYS", "COUNT_KEYS", "PASS_FACTOR", "RATIO_COLUMNS", "DELTA_PREFIX", "add_derived", "add_ratios",
    "baseline_mask", "missing_cells", "numeric",
]

#: the axes a per-cell metric is matched on against its baseline (within one run)
CELL_KEYS = ("run_id", "height", "width", "batch", "dtype", "device", "pass", "mode")
#: the axes a count (params, MACs at batch 1, forward) is matched on
COUNT_KEYS = ("run_id", "height", "width")
#: FLOPs of the timed pass in units of the forward pass
PASS_FACTOR = {"forward": 1, "forward_backward": 3}
#: value column -> keys it is matched on; each gets a ``<column>_ratio`` column
RATIO_COLUMNS = {
    "params": COUNT_KEYS,
    "macs_fvcore": COUNT_KEYS,
    "macs_torch": COUNT_KEYS,
    "macs_analytic": COUNT_KEYS,
    "latency_ms_median": CELL_KEYS,
    "mem_peak_bytes": CELL_KEYS,
    "achieved_gflops_s": CELL_KEYS,
}
#: accuracy columns get ``<column>_delta`` (percentage points) instead of a ratio
DELTA_PREFIX = "acc_"


def add_derived(runs: Runs) -> pd.DataFrame:
    """The runs' frame plus ``series``, ``is_baseline``, ``macs_torch``, ``work_flops``, ``achieved_gflops_s`` and
    one ``<metric>_ratio`` / ``acc_*_delta`` column per compared metric."""
    frame = runs.frame.copy()
    frame["series"] = _series(frame)
    frame["is_baseline"] = baseline_mask(frame, runs)
    frame["macs_torch"] = frame["flops_torch"].astype("Float64") / 2
    factor = frame["pass"].map(PASS_FACTOR).astype("Float64")
    frame["work_flops"] = 2 * frame["macs_fvcore"].astype("Float64") * frame["batch"].astype("Float64") * factor
    frame["achieved_gflops_s"] = frame["work_flops"] / (frame["latency_ms_median"] * 1e-3) / 1e9
    for column in ("macs_torch", "work_flops", "achieved_gflops_s"):
        frame[column] = frame[column].astype("float64")
    add_ratios(frame)
    return frame


def add_ratios(frame: pd.DataFrame) -> None:
    """Fill the ``<metric>_ratio``, ``acc_*_delta`` and latency-ratio columns against the rows ``is_baseline``
    marks (the run's baseline here; an ablation's reference in :mod:`attnbench.report.ablation`)."""
    for column, keys in RATIO_COLUMNS.items():
        frame[f"{column}_ratio"] = frame[column].astype("float64") / _baseline_value(frame, column, keys)
    for column in [c for c in ("acc_top1", "acc_top5") if c in frame.columns]:  # the percentages only
        frame[f"{column}_delta"] = frame[column] - _baseline_value(frame, column, CELL_KEYS)
    _add_latency_intervals(frame)
    add_accuracy_uncertainty(frame, CELL_KEYS)  # the accuracy's intervals, seed spread and ties (acc_uncertainty.py)


def numeric(frame: pd.DataFrame, column: str) -> pd.Series:
    """``frame[column]`` as float64 (NaN where absent or not a number): new columns are missing in old runs."""
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    return pd.to_numeric(frame[column], errors="coerce").astype("float64")


def _samples(value: Any) -> list[float]:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else []


def _add_latency_intervals(frame: pd.DataFrame) -> None:
    """The latency's uncertainty, as columns the tables and the verdict read.

    ``latency_ci_low``/``latency_ci_high``: the 95% interval of the median in ms — the row's own
    ``latency_ms_ci_low``/``latency_ms_ci_high`` when it has them, else the order-statistic interval of its raw
    samples (:func:`attnbench.core.stats.median_interval`), else the median alone.

    ``latency_ratio`` with ``latency_ratio_low``/``latency_ratio_high`` and ``latency_ratio_method``: the ratio to
    the baseline at the same cell keys. ``paired`` is the run's interleaved measurement (``paired_ratio`` and its
    bootstrap interval, when the row has one against this baseline); ``medians`` is the ratio of the two medians
    with the bootstrap interval of two independent sample sets (:func:`attnbench.core.stats.ratio_of_medians`; no
    interval without raw samples); ``baseline`` marks the baseline itself (1, exactly).
    """
    median = numeric(frame, "latency_ms_median")
    ci_low, ci_high = numeric(frame, "latency_ms_ci_low"), numeric(frame, "latency_ms_ci_high")
    samples = frame["latency_samples_ms"].map(_samples)
    for i in frame.index[median.notna() & (ci_low.isna() | ci_high.isna())]:
        if samples[i]:
            interval = stats.median_interval(samples[i])
            ci_low[i], ci_high[i] = interval.low, interval.high
        else:
            ci_low[i], ci_high[i] = median[i], median[i]
    frame["latency_ci_low"], frame["latency_ci_high"] = ci_low, ci_high

    ratio, low, high = frame["latency_ms_median_ratio"].copy(), numeric(frame, "paired_ratio_low"), \
        numeric(frame, "paired_ratio_high")
    paired = numeric(frame, "paired_ratio")
    method = pd.Series(None, index=frame.index, dtype=object)
    keys = list(CELL_KEYS)
    base_rows = frame[frame["is_baseline"] & median.notna()]
    base_samples = {tuple(r[keys]): samples[i] for i, r in base_rows.iterrows()}
    base_label = {tuple(r[keys]): r["label"] for _, r in base_rows.iterrows()}
    for i, row in frame[median.notna()].iterrows():
        key = tuple(row[keys])
        against = row.get("paired_baseline")
        if row["is_baseline"]:
            ratio[i], low[i], high[i], method[i] = 1.0, 1.0, 1.0, "baseline"
        elif pd.notna(paired[i]) and (not isinstance(against, str) or against == base_label.get(key, against)):
            ratio[i], method[i] = paired[i], "paired"
        elif key in base_samples:
            method[i] = "medians"
            low[i] = high[i] = np.nan
            if len(samples[i]) > 1 and len(base_samples[key]) > 1:
                interval = stats.ratio_of_medians(base_samples[key], samples[i])
                low[i], high[i] = interval.low, interval.high
        else:
            low[i] = high[i] = np.nan
    frame["latency_ratio"], frame["latency_ratio_low"], frame["latency_ratio_high"] = ratio, low, high
    frame["latency_ratio_method"] = method


#: identity of a cell that produced no value, as the missing-cells list and the figures need it
MISSING_COLUMNS = ("run_id", "series", "attention", "height", "width", "tokens", "batch", "pass", "dtype", "device",
                   "mode", "status", "reason")


def missing_cells(frame: pd.DataFrame, runs: Runs) -> pd.DataFrame:
    """The cells without a value: rows whose status is not ``ok`` and the manifest's ``cells.excluded_cells``
    (status ``excluded``, the suite's reason). One row per cell, columns :data:`MISSING_COLUMNS`."""
    bad = frame[frame["status"] != "ok"]
    records = [{**{c: r.get(c) for c in MISSING_COLUMNS if c != "reason"}, "reason": r.get("error")}
               for _, r in bad.iterrows()]
    for run_id in runs.dirs:
        listed = (runs.manifests.get(run_id, {}).get("cells") or {}).get("excluded_cells") or []
        names = frame[frame["run_id"] == run_id].drop_duplicates("label").set_index("label")["series"].to_dict()
        for cell in listed if isinstance(listed, list) else []:
            label = str(cell.get("label") or cell.get("attention"))
            height, width = cell.get("height"), cell.get("width")
            records.append({"run_id": run_id, "series": names.get(label, label), "attention": cell.get("attention"),
                            "height": height, "width": width,
                            "tokens": height * width if isinstance(height, int) and isinstance(width, int) else None,
                            "batch": cell.get("batch"), "pass": cell.get("pass"), "dtype": cell.get("dtype"),
                            "device": cell.get("device"), "mode": cell.get("mode"), "status": "excluded",
                            "reason": cell.get("reason")})
    return pd.DataFrame(records, columns=list(MISSING_COLUMNS))


def _series(frame: pd.DataFrame) -> pd.Series:
    """The line/row name: the label, plus the run when several runs share labels."""
    runs_per_label = frame.groupby("label")["run_id"].nunique()
    if frame["run_id"].nunique() > 1 and (runs_per_label > 1).any():
        tags = run_tags(frame["run_id"].astype(str).unique())
        return frame["label"].astype(str) + " (" + frame["run_id"].astype(str).map(tags) + ")"
    return frame["label"].astype(str)


def run_tags(run_ids, longest: int = 16) -> dict[str, str]:
    """A short name per run for the series of a multi-run report: the ``-``-separated parts of its id that differ
    between the runs (``sweep-20261206-101010`` and ``sweep-20261206-113030`` -> ``101010``, ``113030``), so a
    label does not carry the whole id into every table; the full ids where those parts are not unique or longer
    than ``longest`` characters (the report's header lists the runs by id)."""
    ids = sorted(set(map(str, run_ids)))
    parts = {i: i.split("-") for i in ids}
    depth = max(len(p) for p in parts.values())
    # align the parts from the end (run directories end in -YYYYMMDD-HHMMSS; a suite name may hold dashes)
    same = {k for k in range(1, depth + 1) if len({p[-k] if k <= len(p) else None for p in parts.values()}) == 1}
    tags = {i: "-".join(p[-k] for k in range(len(p), 0, -1) if k not in same) for i, p in parts.items()}
    if len(set(tags.values())) == len(ids) and all(0 < len(t) <= longest for t in tags.values()):
        return tags
    return {i: i for i in ids}


def baseline_mask(frame: pd.DataFrame, runs: Runs) -> pd.Series:
    """True on the rows of each run's baseline: label == baseline, else the one label whose attention is it."""
    mask = pd.Series(False, index=frame.index)
    for run_id, rows in frame.groupby("run_id"):
        name = runs.baseline(str(run_id))
        hit = rows["label"] == name
        if not hit.any():
            labels = rows.loc[rows["attention"] == name, "label"].unique()
            hit = rows["label"] == labels[0] if len(labels) == 1 else hit
        mask.loc[rows.index] = hit
    return mask


def _baseline_value(frame: pd.DataFrame, column: str, keys: tuple[str, ...]) -> pd.Series:
    """For each row, the baseline's value of ``column`` at the same ``keys`` (NaN where there is none)."""
    keys = list(keys)
    base = frame.loc[frame["is_baseline"], keys + [column]].copy()
    base[column] = base[column].astype("float64")
    base = base.dropna(subset=[column]).groupby(keys, dropna=False)[column].first().rename("_base")
    joined = frame[keys].join(base, on=keys)
    return joined["_base"].astype("float64")
