"""The parent's merge of every job's shard into ``results.jsonl`` (the jobs' side: :mod:`.shard_job`).

A job writes only its own shard, ``RUN_DIR/shards/<job>/results.jsonl`` (:func:`attnbench.core.results.shard_dir`),
with the same durable one-line appends as an in-process run; it never takes the run's lock and never touches
``results.jsonl``.

:func:`merge_shards` is the only writer of ``results.jsonl`` in an executor run: it appends, in job order, the
first final row of every cell the file does not hold yet, by writing the whole new file beside it and
``os.replace``-ing it, so a reader (``report``, a job checking what is done) sees the old file or the new one.
Reading the shards imports neither torch nor submitit (``attnbench status``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

from ...core.results import (RESULTS_FILE, SHARDS_DIR, STATUSES, finished_ids, read_rows, replace_atomically,
                             row_line)

__all__ = ["shard_rows", "merge_shards", "MergeResult", "rows_by_job"]


def shard_rows(run_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Job name -> the rows of its shard, jobs in name order (``job-0000``, ``job-0001``, ...)."""
    root = Path(run_dir) / SHARDS_DIR
    if not root.is_dir():
        return {}
    return {d.name: read_rows(d) for d in sorted(root.iterdir()) if (d / RESULTS_FILE).exists()}


@dataclasses.dataclass
class MergeResult:
    added: list[dict[str, Any]]      # rows appended to results.jsonl by this merge
    duplicates: int                  # final rows of cells that already had one (a re-run cell), not merged


def merge_shards(run_dir: str | Path, extra_rows: Iterable[dict[str, Any]] = ()) -> MergeResult:
    """Append to ``results.jsonl`` every cell's first final row found in ``extra_rows`` and the shards.

    The file is rewritten whole (a temporary file in the run directory, fsynced, then ``os.replace``): its
    existing lines are kept byte for byte and in order, new rows follow. Nothing is written when nothing is new.
    """
    run_dir = Path(run_dir)
    path = run_dir / RESULTS_FILE
    have = finished_ids(read_rows(run_dir))
    added: list[dict[str, Any]] = []
    duplicates = 0
    candidates = list(extra_rows) + [r for rows in shard_rows(run_dir).values() for r in rows]
    for row in candidates:
        if row.get("status") not in STATUSES or "cell_id" not in row:
            continue
        if row["cell_id"] in have:
            duplicates += 1
            continue
        have.add(row["cell_id"])
        added.append(row)
    if added:
        _rewrite_with(path, added)
    return MergeResult(added, duplicates)


def _rewrite_with(path: Path, rows: list[dict[str, Any]]) -> None:
    """``path`` with ``rows`` appended (in :class:`ResultsWriter`'s line format), replaced atomically."""
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):  # a line cut short by a killed in-process run: drop it, as the reader does
        old = old[: old.rfind(b"\n") + 1]
    replace_atomically(path, old + b"".join(row_line(r) for r in rows))


def rows_by_job(run_dir: str | Path) -> dict[str, set[str]]:
    """Job name -> cell_ids with a final row in its shard."""
    return {job: finished_ids(rows) for job, rows in shard_rows(run_dir).items()}
