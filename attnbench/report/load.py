"""Read run directories (``results.jsonl`` + ``manifest.json``) into one tidy pandas DataFrame.

A run directory is what ``attnbench run`` writes (the results contract): ``results.jsonl`` holds one JSON object
per finished cell, appended as cells finish, and ``manifest.json`` the environment and the resolved suite. This
module reads only those files, so a report renders on a machine without torch, years after the run.

The files are read through :mod:`attnbench.core.results`, the one owner of the format. Tolerated, because a run may be
killed mid-write or a disk may fill: damaged lines of ``results.jsonl`` (skipped, with one warning naming their line
numbers), a missing or corrupt ``manifest.json`` (the report then lacks the environment, with a warning), and a
cell that appears twice in one run (the last row wins, as with ``--resume``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..core import results, uncertainty
from ..core.errors import UserError
from ..core.results import MANIFEST_FILE, RESULTS_FILE, read_results_file

__all__ = [
    "Runs",
    "find_latest_run",
    "load_runs",
    "read_manifest",
    "read_results",
    "to_csv_frame",
]


@dataclasses.dataclass
class Runs:
    """Rows of one or more runs and their manifests.

    Attributes:
        frame: one row per (run, cell); identity columns first, then metrics, then any other columns.
        manifests: run_id -> the run's manifest dict ({} when the run has no manifest.json).
        dirs: run_id -> the run directory.
    """

    frame: pd.DataFrame
    manifests: dict[str, dict[str, Any]]
    dirs: dict[str, Path]

    def baseline(self, run_id: str) -> str:
        """The baseline attention of a run: the manifest's ``suite.baseline``, else ``"mhsa"``."""
        suite = self.manifests.get(run_id, {}).get("suite") or {}
        return str(suite.get("baseline") or "mhsa")

    def suite_names(self) -> list[str]:
        """Suite names of the runs, in run order, without repeats."""
        names: list[str] = []
        for run_id in self.dirs:
            suite = self.manifests.get(run_id, {}).get("suite") or {}
            name = suite.get("name")
            if not name:
                rows = self.frame.loc[self.frame["run_id"] == run_id, "suite"].dropna()
                name = rows.iloc[0] if len(rows) else run_id
            if name not in names:
                names.append(str(name))
        return names


def read_results(path: Path) -> list[dict[str, Any]]:
    """The rows of one ``results.jsonl`` (:func:`attnbench.core.results.read_results_file`): damaged lines -- a cut-off
    last line, bytes that are not UTF-8, a corrupt line anywhere -- are skipped with one warning naming them.

    Raises:
        UserError: the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; a run directory holds {RESULTS_FILE} (written by `attnbench run`)")
    return read_results_file(path)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's ``manifest.json``, or ``{}`` (with a warning) when it is missing or damaged."""
    path = Path(run_dir) / MANIFEST_FILE
    try:
        return results.read_manifest(run_dir)
    except FileNotFoundError:
        warnings.warn(f"{path}: missing; the report will not show this run's environment", stacklevel=2)
    except UserError as exc:
        warnings.warn(f"{exc.message}; the report will not show this run's environment", stacklevel=2)
    return {}


def load_runs(run_dirs: Iterable[str | Path]) -> Runs:
    """Read run directories into one tidy frame.

    Args:
        run_dirs: directories each holding ``results.jsonl`` (and normally ``manifest.json``).

    Raises:
        UserError: a directory is missing, or no directory holds any row.
    """
    frames, manifests, dirs = [], {}, {}
    for run_dir in map(Path, run_dirs):
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: not a directory; expected a run directory written by `attnbench run`")
        rows = read_results(run_dir / RESULTS_FILE)
        run_id = str(rows[0].get("run_id") or run_dir.name) if rows else run_dir.name
        if run_id in dirs:
            run_id = f"{run_id}@{run_dir}"
        for row in rows:
            row["run_id"] = run_id
        manifests[run_id] = read_manifest(run_dir)
        dirs[run_id] = run_dir
        frames.append(pd.DataFrame(rows))
    if not frames or all(f.empty for f in frames):
        where = ", ".join(str(d) for d in dirs.values()) or "(no directory given)"
        raise UserError(f"no results in {where}: {RESULTS_FILE} has no finished cell yet")
    return Runs(frame=tidy(pd.concat([f for f in frames if not f.empty], ignore_index=True)),
                manifests=manifests, dirs=dirs)


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Contract columns in order with missing ones as NaN, typed, one row per (run, cell)."""
    frame = frame.copy()
    for column in results.ROW_HEAD + results.METRIC_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    if frame["cell_id"].notna().any():
        keyed = frame["cell_id"].notna()
        # a cell run again (resume, retry) appears twice: its last row is the current answer
        dup = keyed & frame.duplicated(["run_id", "cell_id"], keep="last")
        frame = frame.loc[~dup].reset_index(drop=True)
    for column in results.INT_COLUMNS:
        frame[column] = _to_int(frame[column])
    for column in results.FLOAT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    missing_tokens = frame["tokens"].isna()
    frame.loc[missing_tokens, "tokens"] = frame.loc[missing_tokens, "height"] * frame.loc[missing_tokens, "width"]
    frame["label"] = frame["label"].where(frame["label"].notna(), frame["attention"])
    frame["status"] = frame["status"].fillna("ok")
    frame["latency_noisy"] = _noisy(frame)
    # acc_model, acc_dataset and the per-epoch curves are text and lists: only the numeric acc_* columns convert
    text_columns = ("acc_model", "acc_dataset", "acc_loss_curve", "acc_top1_curve", "acc_threads_how",
                    "acc_threads_probe_ms", "acc_top1_correct")
    for column in [c for c in frame.columns
                   if c.startswith(("macs_analytic_", "acc_")) and c not in text_columns]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    extra = sorted(c for c in frame.columns if c not in results.ROW_HEAD + results.METRIC_COLUMNS)
    return frame[list(results.ROW_HEAD + results.METRIC_COLUMNS) + extra]


def _to_int(series: pd.Series) -> pd.Series:
    numeric = pd.to_numeric(series, errors="coerce").astype("float64")
    finite = numeric.dropna()
    if (finite == finite.round()).all():
        return numeric.astype("Int64")
    return numeric


def _noisy(frame: pd.DataFrame) -> pd.Series:
    """The one noisy rule (:func:`attnbench.core.uncertainty.is_noisy`) on every row, old rows included, so the report
    never disagrees with the metric or ``compare`` about a cell."""
    if frame.empty:
        return pd.Series([], dtype=bool, index=frame.index)
    return frame.apply(lambda row: uncertainty.is_noisy(row.to_dict()), axis=1).astype(bool)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def to_csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with dict/list cells as compact JSON strings (``config``, ``latency_samples_ms``)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object and out[column].map(lambda v: isinstance(v, (dict, list))).any():
            out[column] = out[column].map(
                lambda v: json.dumps(v, sort_keys=True, separators=(",", ":")) if isinstance(v, (dict, list)) else v)
    return out


def find_latest_run(root: str | Path = "runs") -> Path:
    """The most recently modified run directory under ``root`` (one holding ``results.jsonl``).

    Raises:
        UserError: no run directory under ``root``, saying where it looked and what to run.
    """
    root = Path(root)
    candidates = [p.parent for p in root.glob(f"*/{RESULTS_FILE}")] if root.is_dir() else []
    if not candidates:
        raise UserError(
            f"no run found: looked for {root.resolve()}/*/{RESULTS_FILE}; run a suite first "
            "(`attnbench run suites/smoke.yaml`) or pass RUN_DIR")
    return max(candidates, key=_modified)


def _modified(run_dir: Path) -> float:
    files = [run_dir / RESULTS_FILE, run_dir / MANIFEST_FILE, run_dir]
    return max(f.stat().st_mtime for f in files if f.exists())
