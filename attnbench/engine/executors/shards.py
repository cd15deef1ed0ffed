"""One batch job's work (:class:`ShardJob`) and the parent's merge of every shard into ``results.jsonl``.

A job writes only its own shard, ``RUN_DIR/shards/<job>/results.jsonl``, with the same durable one-line appends as
an in-process run (:class:`attnbench.core.results.ResultsWriter`); it never takes the run's lock and never touches
``results.jsonl``. It is idempotent: it first reads its shard (and the merged results) and measures only cells
that have no final row yet. So whatever restarts it — submitit re-queueing it after a time-out (it is a
``submitit.helpers.Checkpointable``), Slurm re-queueing it after a pre-emption or a node failure, a re-submission
— it continues where it stopped, losing at most the cell that was being measured and never writing a row twice.

:func:`merge_shards` is the only writer of ``results.jsonl`` in an executor run: it appends, in job order, the
first final row of every cell the file does not hold yet, by writing the whole new file beside it and
``os.replace``-ing it, so a reader (``report``, a job checking what is done) sees the old file or the new one.

Accuracy jobs with more than one process (``nodes`` × ``tasks_per_node``): every process exports the
torch.distributed environment from submitit's job environment (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``: what torchrun would set); rank 0 measures the cells as usual (its ``accuracy``
metric joins the process group to train) and writes the rows; the other ranks only join each training run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Optional

try:  # the parent and the jobs have submitit; `attnbench status` and merging do not need it
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - submitit missing: submitting fails with a clear error instead
    Checkpointable = object  # type: ignore[assignment,misc]

from ...core import machine_load
from ...suite.cells import Cell
from ...core.results import (RESULTS_FILE, STATUSES, ResultsWriter, finished_ids, make_row, now_iso, read_rows,
                             replace_atomically, row_line)
from ...core.job_record import record_start, set_cell

__all__ = ["SHARDS_DIR", "ShardJob", "shard_dir", "shard_rows", "merge_shards", "MergeResult"]

SHARDS_DIR = "shards"


def shard_dir(run_dir: str | Path, job: str) -> Path:
    return Path(run_dir) / SHARDS_DIR / job


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


class ShardJob(Checkpointable):
    """The callable a batch job runs: measure ``cells`` into the job's shard, skipping cells already done.

    Args:
        run_dir: the run directory (on a file system the nodes share).
        name: the job's name; its shard is ``run_dir/shards/<name>/``.
        cells: the cells' identity columns (:meth:`attnbench.suite.cells.Cell.identity`).
        runner_spec: :meth:`attnbench.engine.execute.CellRunner.locations` of the parent's runner (metric functions by
            ``module:qualname``, gate, settings, seed), so the job runs exactly the parent's functions.

        isolate: measure each cell in a fresh child process (``--isolate``), so a cell that kills its process
            (a segfault) becomes a ``failed`` row instead of ending the job.
        baselines: cell_id -> identity of the baseline cell it is timed against (paired latency), as
            :attr:`attnbench.engine.runner.Plan.baselines`.
        parent_pid: the attnbench process this job works for; when given (local jobs of a parent that waits),
            the job ends once that process is gone, however it ended (:func:`attnbench.engine.parent_watch.watch_parent`).

    Picklable plain data only (submitit pickles it, and again at a checkpoint): the runner is made in the job.
    """

    def __init__(self, run_dir: str, name: str, cells: list[dict[str, Any]], runner_spec: dict[str, Any],
                 isolate: bool = False, baselines: Optional[dict[str, dict[str, Any]]] = None,
                 parent_pid: Optional[int] = None):
        self.run_dir, self.name, self.cells, self.runner_spec = str(run_dir), name, cells, runner_spec
        self.isolate, self.baselines, self.parent_pid = isolate, baselines or {}, parent_pid

    def todo(self) -> list[Cell]:
        """This job's cells with no final row in its shard or in the merged results."""
        done = finished_ids(read_rows(shard_dir(self.run_dir, self.name))) | finished_ids(read_rows(self.run_dir))
        cells = [Cell.from_identity(c) for c in self.cells]
        return [c for c in cells if c.cell_id not in done]

    def __call__(self) -> dict[str, Any]:
        from ...accuracy.job import RUN_DIR_ENV

        os.environ[RUN_DIR_ENV] = self.run_dir  # accuracy checkpoints go under the run (a shared file system)
        if getattr(self, "parent_pid", None):
            from ..parent_watch import watch_parent

            watch_parent(self.parent_pid)
        rank, world = _join_distributed_env()
        todo = self.todo()
        if rank == 0:
            record_start(self.run_dir, self.name)
        if rank != 0:
            _follow_trainings(todo, self.runner_spec)
            return {"job": self.name, "rank": rank, "world_size": world}
        from ..execute import CellRunner, IsolatedRunner

        runner = CellRunner.from_locations(self.runner_spec)
        runner = IsolatedRunner(runner) if self.isolate else runner
        out = shard_dir(self.run_dir, self.name)
        out.mkdir(parents=True, exist_ok=True)
        run_id = Path(self.run_dir).name
        with ResultsWriter(out) as writer:
            for cell in todo:
                set_cell(self.run_dir, self.name, cell.label)
                started, t0, load_before = now_iso(), time.perf_counter(), machine_load.sample()
                base = self.baselines.get(cell.cell_id)
                outcome = runner.measure(cell, Cell.from_identity(base) if base else None)
                if outcome.error and outcome.error.startswith("UncompletedJobError"):
                    # submitit gave up re-queueing (timed out too often) while the cell ran: not the cell's fault
                    raise RuntimeError(outcome.error)
                writer.append(make_row(cell, run_id, status=outcome.status, error=outcome.error,
                                       error_stage=outcome.error_stage, started_at=started,
                                       duration_s=time.perf_counter() - t0,
                                       columns={**outcome.columns,
                                                **machine_load.cell_columns(load_before, machine_load.sample())}))
        set_cell(self.run_dir, self.name, None)
        return {"job": self.name, "measured": len(todo), "world_size": world}


def _join_distributed_env() -> tuple[int, int]:
    """(rank, world size) of this process in its job; with several processes, export the torch.distributed
    variables a ``torchrun`` launch would set (``env://`` rendezvous at the job's first node)."""
    try:
        import submitit

        env = submitit.JobEnvironment()
        world = env.num_tasks
    except Exception:  # noqa: BLE001 - not inside a submitit job (called directly): one process
        return 0, 1
    if world > 1:
        # keep every GPU visible: the trainer picks cuda:LOCAL_RANK itself
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return env.global_rank, world


def _follow_trainings(cells: list[Cell], runner_spec: dict[str, Any]) -> None:
    """A rank other than 0: join the training of each model rank 0 trains for these cells, once per model."""
    settings = dict(runner_spec["settings"].get("accuracy") or {})
    if "accuracy" not in [n for n, _ in runner_spec["metrics"]]:
        return
    from ...accuracy.job import make_job, run_job

    seen: set[str] = set()
    for cell in cells:
        key = json.dumps([cell.attention, cell.config, cell.device], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        run_job(make_job(settings, cell.attention, cell.config, cell.device, seed=runner_spec["seed"]))


def rows_by_job(run_dir: str | Path) -> dict[str, set[str]]:
    """Job name -> cell_ids with a final row in its shard."""
    return {job: finished_ids(rows) for job, rows in shard_rows(run_dir).items()}
