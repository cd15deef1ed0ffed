"""The run directory: ``results.jsonl`` (one row per finished cell) and ``manifest.json`` (the environment).

Crash safety: a row is written as one ``write`` of one line, then flushed and ``os.fsync``-ed, so a killed run
loses at most the cell it was measuring. A line cut short by a kill mid-write is dropped (with a warning) when the
file is read, and cut off before the next row is appended. The manifest is replaced atomically (a temporary file
in the same directory, fsynced, then ``os.replace``), so it is always either the old or the new version.

Row layout (the results contract, ``docs/engine.md``): identity columns first, then ``status``, ``error``,
``error_stage``, ``started_at``, ``duration_s``, then the metric columns. Non-finite floats are written as
``null`` so the file is strict JSON.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional

from .cells import Cell

__all__ = ["SCHEMA_VERSION", "STATUSES", "ROW_HEAD", "RESULTS_FILE", "MANIFEST_FILE", "ResultsWriter", "make_row", "read_rows",
           "finished_ids", "write_manifest", "read_manifest"]

SCHEMA_VERSION = 1
#: every status a row can have; all are final (``--resume`` does not run such a cell again)
STATUSES = ("ok", "failed", "oom", "skipped")
RESULTS_FILE = "results.jsonl"
MANIFEST_FILE = "manifest.json"
#: the columns every row starts with, in this order; a metric column may not reuse one of these names
ROW_HEAD = ("schema_version", "run_id", "cell_id", "suite", "attention", "label", "config", "height", "width",
            "tokens", "batch", "dtype", "device", "pass", "mode", "status", "error", "error_stage", "started_at",
            "duration_s")


def _strict(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def make_row(cell: Cell, run_id: str, *, status: str, error: Optional[str] = None, error_stage: Optional[str] = None,
             started_at: str, duration_s: float, columns: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """One results row: identity columns, outcome, then metric columns (which may not overwrite identity)."""
    if status not in STATUSES:
        raise ValueError(f"status={status!r} is not one of {STATUSES}")
    row: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "run_id": run_id, "cell_id": cell.cell_id}
    row.update(cell.identity())
    row.update(status=status, error=error, error_stage=error_stage, started_at=started_at,
               duration_s=round(duration_s, 6))
    for key, value in (columns or {}).items():
        if key in row:
            raise ValueError(f"metric column {key!r} clashes with an identity column of the results row")
        row[key] = value
    return row


def _jsonable(value: Any) -> Any:
    """numpy scalars and tensors' ``.item()``/``.tolist()``; anything else as its text."""
    for method in ("tolist", "item"):
        if hasattr(value, method):
            return _strict(getattr(value, method)())
    return str(value)


class ResultsWriter:
    """Appends rows to ``results.jsonl``, one durable line each."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / RESULTS_FILE
        _drop_partial_last_line(self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, row: dict[str, Any]) -> None:
        line = json.dumps(_strict(row), separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                          default=_jsonable) + "\n"
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_partial_last_line(path: Path) -> None:
    """Cut a last line that has no newline (a write killed midway), so the next row starts on its own line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        warnings.warn(f"{path}: dropping an incomplete last line ({len(data) - keep} bytes) left by a killed run")
        f.truncate(keep)


def read_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """All rows of a run's ``results.jsonl`` ([] when there is none); an unreadable last line is skipped."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                warnings.warn(f"{path}: skipping an incomplete last line ({e})")
                continue
            raise ValueError(f"{path}:{i + 1}: not a JSON row: {e}") from None
    return rows


def finished_ids(rows: Iterable[dict[str, Any]]) -> set[str]:
    """cell_ids that already have a row with a final status."""
    return {r["cell_id"] for r in rows if r.get("status") in STATUSES and "cell_id" in r}


def write_manifest(run_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Atomically replace ``manifest.json``."""
    run_dir = Path(run_dir)
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=run_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_strict(manifest), f, indent=2, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, run_dir / MANIFEST_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST_FILE
    return json.loads(path.read_text(encoding="utf-8"))
