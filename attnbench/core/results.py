"""The run directory's files: the one owner of the results format (names, columns, schema version, readers).

``results.jsonl`` holds one row per finished cell, ``manifest.json`` the environment and the resolved suite.
Everything that reads a run (``--resume``, ``report``, ``compare``, the accuracy report) goes through this module,
and it imports neither torch nor pydantic, so a report renders anywhere.

Crash safety: a row is written as one ``write`` of one line, then ``os.fsync``-ed, so a killed run loses at most
the cell it was measuring; a write that fails midway (a full disk) is cut back before the error is raised. The
manifest is replaced atomically (a temporary file in the same directory, fsynced, then ``os.replace``), so it is
always either the old or the new version.

Damage (a line cut off by a kill, bytes that are not UTF-8, a corrupt line in the middle): readers skip such lines
and say so in one warning line with the line numbers; :func:`repair` (run by ``--resume`` and by every writer)
moves them to ``results.damaged.jsonl`` -- it never deletes data -- so that the next row starts on a line of its
own. A corrupt manifest is moved to ``manifest.damaged.json`` by :func:`quarantine_manifest`.

Row layout (the results contract, ``docs/engine.md``): identity columns first, then ``status``, ``error``,
``error_stage``, ``started_at``, ``duration_s``, then the metric columns. Non-finite floats are written as
``null`` so the file is strict JSON.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import stat
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

from .errors import UserError

if TYPE_CHECKING:  # cells imports the suite schema (pydantic); the readers here must stay light
    from ..suite.cells import Cell

__all__ = ["SCHEMA_VERSION", "STATUSES", "FAILED_STATUSES", "IDENTITY_COLUMNS", "ROW_HEAD", "RESULTS_FILE", "MANIFEST_FILE",
           "DAMAGED_RESULTS_FILE", "DAMAGED_MANIFEST_FILE", "LOCK_FILE", "RUN_DIR_ENV", "ResultsWriter", "Scan", "make_row",
           "CELLS_DIR", "SHARDS_DIR", "shard_dir", "scan_results", "read_rows", "read_results_file", "repair", "finished_ids", "write_manifest",
           "read_manifest", "quarantine_manifest", "METRIC_COLUMNS", "INT_COLUMNS", "FLOAT_COLUMNS", "now_iso",
           "row_line", "json_text", "replace_atomically", "FILE_MODE", "created_mode"]

SCHEMA_VERSION = 1
#: every status a row can have; all are final (``--resume`` does not run such a cell again)
STATUSES = ("ok", "failed", "oom", "skipped")
#: the statuses of a cell that ran and did not measure (a skipped cell was not run)
FAILED_STATUSES = ("failed", "oom")
RESULTS_FILE = "results.jsonl"
MANIFEST_FILE = "manifest.json"
#: where :func:`repair` moves damaged lines of ``results.jsonl`` (appended, as the raw bytes)
DAMAGED_RESULTS_FILE = "results.damaged.jsonl"
#: where a corrupt ``manifest.json`` is moved before it is rebuilt
DAMAGED_MANIFEST_FILE = "manifest.damaged.json"
#: the mode (before the umask) of every file of a run directory: results.jsonl, manifest.json, shards
FILE_MODE = 0o644
#: set by the runner to the run directory being measured: metrics keep their work files there (accuracy jobs)
RUN_DIR_ENV = "ATTNBENCH_RUN_DIR"
#: the advisory lock of the one writer of a run directory (:mod:`attnbench.engine.run_lock`)
LOCK_FILE = ".lock"
#: where isolated cell children write their outcome while they run (removed, when empty, at the end of a run)
CELLS_DIR = ".cells"
#: the batch jobs' own results, ``shards/<job>/results.jsonl``, merged into ``results.jsonl`` by the parent
SHARDS_DIR = "shards"
#: the columns that say which cell a row is (hashed into ``cell_id``, :func:`attnbench.suite.cells.cell_id_of`)
IDENTITY_COLUMNS = ("suite", "attention", "label", "config", "height", "width", "tokens", "batch", "dtype", "device",
                    "pass", "mode")
#: the columns every row starts with, in this order; a metric column may not reuse one of these names
ROW_HEAD = ("schema_version", "run_id", "cell_id") + IDENTITY_COLUMNS + (
    "status", "error", "error_stage", "started_at", "duration_s")
#: the metric columns every reader shows, in order (a metric that did not run leaves them missing)
METRIC_COLUMNS = (
    "params", "params_trainable", "macs_fvcore", "flops_torch", "macs_analytic", "keys_per_query",
    "flops_uncounted_ops", "latency_ms_median", "latency_ms_q1", "latency_ms_q3", "latency_ms_iqr", "latency_n",
    "latency_samples_ms", "latency_noisy", "latency_timer", "compile_time_s", "threads", "mem_peak_bytes",
    "mem_method",
)
#: exact counts: a reader keeps them integral (pandas' nullable Int64 in the report: 1234, not 1234.0)
INT_COLUMNS = (
    "schema_version", "height", "width", "tokens", "batch", "params", "params_trainable", "macs_fvcore",
    "flops_torch", "macs_analytic", "latency_n", "threads", "mem_peak_bytes",
)
#: real numbers among the columns above
FLOAT_COLUMNS = (
    "duration_s", "keys_per_query", "latency_ms_median", "latency_ms_q1", "latency_ms_q3", "latency_ms_iqr",
    "compile_time_s",
)


def now_iso() -> str:
    """The time stamp of rows and manifests: UTC, ISO 8601, milliseconds."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _strict(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def shard_dir(run_dir: str | Path, job: str) -> Path:
    """The folder of batch job ``job``'s shard (its ``results.jsonl`` and job records)."""
    return Path(run_dir) / SHARDS_DIR / job


def make_row(cell: "Cell", run_id: str, *, status: str, error: Optional[str] = None,
             error_stage: Optional[str] = None, started_at: str, duration_s: float,
             columns: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """One results row: identity columns, outcome, then metric columns (which may not overwrite identity)."""
    if status not in STATUSES:
        raise ValueError(f"status={status!r} is not one of {STATUSES}")
    row: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "run_id": run_id, "cell_id": cell.cell_id}
    row.update(cell.identity())
    row.update(getattr(cell, "factor", None) or {})  # an ablation's factor columns (attnbench.suite.factors)
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


def json_text(value: Any) -> str:
    """``value`` as compact strict JSON (NaN/inf as null; numpy scalars and tensors as numbers and lists)."""
    return json.dumps(_strict(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_jsonable)


def row_line(row: dict[str, Any]) -> bytes:
    """A row as one line of strict JSON (UTF-8, newline-terminated)."""
    return (json_text(row) + "\n").encode("utf-8")


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a short write is legal for regular files on a full disk)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class ResultsWriter:
    """Appends rows to ``results.jsonl``, one durable line each; damaged lines are moved aside first."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / RESULTS_FILE
        repair(run_dir)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)

    def append(self, row: dict[str, Any]) -> None:
        """Write one row durably; on an OSError (a full disk) the partial line is cut off before re-raising."""
        data = row_line(row)
        size = os.fstat(self._fd).st_size
        try:
            _write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError as e:
            try:
                os.ftruncate(self._fd, size)  # never leave half a row behind; truncating needs no space
            except OSError:
                pass  # repair() moves it aside on the next open
            raise OSError(e.errno, e.strerror, str(self.path)) from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- reading ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Scan:
    """What a results file holds: the rows, and the damaged lines as ``(line number, reason, raw bytes)``."""

    path: Path
    rows: list[dict[str, Any]]
    damaged: list[tuple[int, str, bytes]]
    #: the last line had no newline: a write cut off by a kill or a full disk
    cut_last: bool = False
    #: the file does not end in a newline (the next append would join the last line)
    no_newline: bool = False

    def warning(self) -> Optional[str]:
        """One line saying what was skipped, with line numbers; None when nothing was."""
        if not self.damaged:
            return None
        numbers = [n for n, _, _ in self.damaged]
        if len(self.damaged) == 1 and self.cut_last:
            n, why, _ = self.damaged[0]
            return f"{self.path}:{n}: skipping an incomplete last line ({why}), left by a killed run"
        shown = ", ".join(map(str, numbers[:10])) + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
        first = self.damaged[0]
        return (f"{self.path}: skipping {len(numbers)} damaged line(s) (line {shown}; line {first[0]}: {first[1]}); "
                f"`attnbench run --resume` moves them to {DAMAGED_RESULTS_FILE}")


def _parse(line: bytes) -> tuple[Optional[dict[str, Any]], str]:
    """(row, '') or (None, why the line is not a row)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1})"
    try:
        row = json.loads(text)
    except ValueError as e:
        return None, f"not JSON: {e}"
    if not isinstance(row, dict):
        return None, f"expected a JSON object, got {type(row).__name__}"
    return row, ""


def scan_results(path: str | Path) -> Scan:
    """Read a results file without judging: the rows and the damaged lines (none for a missing file)."""
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise UserError(f"{path}: not a regular file; expected the {RESULTS_FILE} of a run directory")
        data = path.read_bytes()
    except FileNotFoundError:
        return Scan(path, [], [])
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
    lines = data.split(b"\n")
    no_newline = bool(lines[-1])
    if not lines[-1]:
        lines.pop()
    rows, damaged = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        row, why = _parse(line)
        if row is None:
            damaged.append((number, why, line))
        else:
            rows.append(row)  # a complete row whose newline did not reach the disk is still a row
    cut_last = no_newline and bool(damaged) and damaged[-1][0] == len(lines)
    return Scan(path, rows, damaged, cut_last=cut_last, no_newline=no_newline)


def read_results_file(path: str | Path) -> list[dict[str, Any]]:
    """The rows of one results file; damaged lines are skipped with one warning (see :meth:`Scan.warning`)."""
    scan = scan_results(path)
    message = scan.warning()
    if message:
        warnings.warn(message, stacklevel=2)
    return scan.rows


def read_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """All rows of a run's ``results.jsonl`` ([] when there is none), skipping damaged lines with a warning."""
    return read_results_file(Path(run_dir) / RESULTS_FILE)


def repair(run_dir: str | Path) -> int:
    """Move the damaged lines of ``results.jsonl`` to ``results.damaged.jsonl``; the number of lines moved.

    The damaged lines are appended to the side file (fsynced) before ``results.jsonl`` is atomically replaced by
    its good lines, so a crash in between at worst leaves a line in both files, never in neither.
    """
    path = Path(run_dir) / RESULTS_FILE
    scan = scan_results(path)
    if not scan.damaged:
        if scan.no_newline:  # a whole row whose newline was not written: finish the line
            with open(path, "ab") as f:
                f.write(b"\n")
        return 0
    side = Path(run_dir) / DAMAGED_RESULTS_FILE
    with open(side, "ab") as f:
        for _, _, raw in scan.damaged:
            f.write(raw + b"\n")
        f.flush()
        os.fsync(f.fileno())
    bad = {n for n, _, _ in scan.damaged}
    kept = [line for n, line in enumerate(path.read_bytes().split(b"\n"), start=1) if n not in bad and line.strip()]
    replace_atomically(path, b"".join(line + b"\n" for line in kept))
    numbers = ", ".join(str(n) for n in sorted(bad))
    if scan.cut_last and len(bad) == 1:
        what = "dropping an incomplete last line left by a killed run"
    else:
        what = f"{len(bad)} damaged line(s)"
    warnings.warn(f"{path}: {what} (line {numbers}): moved to {side}", stacklevel=2)
    return len(bad)


def finished_ids(rows: Iterable[dict[str, Any]]) -> set[str]:
    """cell_ids that already have a row with a final status."""
    return {r["cell_id"] for r in rows if r.get("status") in STATUSES and "cell_id" in r}


# -- the manifest -------------------------------------------------------------------------------------------------

def created_mode() -> int:
    """:data:`FILE_MODE` less the process umask: the mode ``os.open(..., FILE_MODE)`` gives a new file. Temporary
    files (``mkstemp``: 0600) are set to it, so an atomically replaced file has the mode of an appended one."""
    try:  # Linux shows the umask without changing it (os.umask would, for a moment, for every thread)
        with open("/proc/self/status") as f:
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return FILE_MODE & ~mask


def replace_atomically(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically: a temporary file in the same directory, fsynced, then renamed.

    A reader (another process, another node on a shared file system) sees the old file or the new one, never a mix;
    a crash mid-write leaves the old file and no stray temporary one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    try:
        os.fchmod(fd, created_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(run_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Atomically replace ``manifest.json``."""
    text = json.dumps(_strict(manifest), indent=2, sort_keys=False, default=str) + "\n"
    replace_atomically(Path(run_dir) / MANIFEST_FILE, text.encode("utf-8"))


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The run's manifest.

    Raises:
        FileNotFoundError: there is no ``manifest.json``.
        UserError: it is not a UTF-8 JSON object (one line naming the file and the problem).
    """
    path = Path(run_dir) / MANIFEST_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: not a valid manifest ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path}: not a valid manifest (expected a JSON object, got {type(manifest).__name__})")
    return manifest


def quarantine_manifest(run_dir: str | Path) -> Optional[Path]:
    """Move a corrupt ``manifest.json`` to ``manifest.damaged.json`` (kept, never deleted); where it went."""
    path = Path(run_dir) / MANIFEST_FILE
    if not path.exists():
        return None
    side = Path(run_dir) / DAMAGED_MANIFEST_FILE
    os.replace(path, side)
    return side
