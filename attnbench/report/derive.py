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

import pandas as pd

from .load import Runs

__all__ = [
    "CELL_KEYS", "COUNT_KEYS", "PASS_FACTOR", "RATIO_COLUMNS", "DELTA_PREFIX", "add_derived", "baseline_mask",
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
    for column, keys in RATIO_COLUMNS.items():
        frame[f"{column}_ratio"] = frame[column].astype("float64") / _baseline_value(frame, column, keys)
    for column in [c for c in ("acc_top1", "acc_top5") if c in frame.columns]:  # the percentages only
        frame[f"{column}_delta"] = frame[column] - _baseline_value(frame, column, CELL_KEYS)
    return frame


def _series(frame: pd.DataFrame) -> pd.Series:
    """The line/row name: the label, plus the run when several runs share labels."""
    runs_per_label = frame.groupby("label")["run_id"].nunique()
    if frame["run_id"].nunique() > 1 and (runs_per_label > 1).any():
        return frame["label"].astype(str) + " (" + frame["run_id"].astype(str) + ")"
    return frame["label"].astype(str)


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
