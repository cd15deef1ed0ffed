"""One batch job's work: :class:`ShardJob` measures its cells into the job's own shard.

It is idempotent: it first reads its shard (and the merged results) and measures only cells that have no final
row yet. So whatever restarts it — submitit re-queueing it after a time-out (it is a
``submitit.helpers.Checkpointable``), Slurm re-queueing it after a pre-emption or a node failure, a re-submission
— it continues where it stopped, losing at most the cell that was being measured and never writing a row twice.
The parent merges the shards into ``results.jsonl`` (:mod:`.shards`).

Accuracy jobs with more than one process (``nodes`` × ``tasks_per_node``): every process exports the
torch.distributed environment from submitit's job environment (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``: what torchrun would set); rank 0 measures the cells as usual (its ``accuracy``
metric joins the process group to train) and writes the rows; the other ranks only join each training run.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

try:  # the parent and the jobs have submitit; `attnbench status` and merging do not need it
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - submitit missing: submitting fails with a clear error instead
    Checkpointable = object  # type: ignore[assignment,misc]

from ...core import machine_load
from ...core.job_record import record_start, set_cell
from ...core.results import ResultsWriter, finished_ids, make_row, now_iso, read_rows, shard_dir
from ...suite.cells import Cell

__all__ = ["ShardJob"]


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
