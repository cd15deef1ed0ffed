"""What a batch job leaves beside its shard, so that the run's record outlives the scheduler's memory.

* ``shards/<job>/starts.jsonl``: one line each time the job's function starts (``record_start``): the scheduler's
  job id and restart count. A pre-emption or time-out that Slurm (or submitit) re-queues keeps the job id, so
  only these lines show the job ran twice: a job's **tries** are its submissions, each counted once per start.
* ``shards/<job>/progress.json``: the cell the job is measuring and, for a training cell, the epoch the training
  loop finished last (``report_epoch``, called by :func:`attnbench.accuracy.train.fit` through
  ``$ATTNBENCH_JOB_PROGRESS``), so ``attnbench status`` shows a long accuracy job moving.
* In ``jobs.json`` (the ledger), each submission keeps the **last state** the scheduler reported for it
  (``remember_states``), so a job Slurm has forgotten (no accounting database) still shows ``CANCELLED`` rather
  than ``UNKNOWN``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from .results import now_iso, replace_atomically, shard_dir

__all__ = ["STARTS_FILE", "PROGRESS_FILE", "PROGRESS_ENV", "record_start", "read_starts", "set_cell",
           "report_epoch", "read_progress", "count_tries", "remember_states", "progress_text"]

STARTS_FILE = "starts.jsonl"
PROGRESS_FILE = "progress.json"
#: the progress file of the job measuring in this process (set by the job, read by the training loop)
PROGRESS_ENV = "ATTNBENCH_JOB_PROGRESS"


def record_start(run_dir: str | Path, job: str) -> None:
    """Append this start of ``job`` (its scheduler id and restart count) to its ``starts.jsonl``."""
    folder = shard_dir(run_dir, job)
    folder.mkdir(parents=True, exist_ok=True)
    job_id = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")
    line = json.dumps({"job_id": job_id, "restart": os.environ.get("SLURM_RESTART_COUNT"), "at": now_iso()})
    with open(folder / STARTS_FILE, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_starts(run_dir: str | Path, job: str) -> list[dict[str, Any]]:
    path = shard_dir(run_dir, job) / STARTS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut by a kill: that start is still counted by the others
            continue
    return out


def count_tries(submissions: list[dict[str, Any]], starts: list[dict[str, Any]]) -> int:
    """Submissions, each counted once per start under its job id (a re-queue keeps the id); at least one each."""
    per_id: dict[str, int] = {}
    for start in starts:
        per_id[str(start.get("job_id"))] = per_id.get(str(start.get("job_id")), 0) + 1
    return sum(max(1, per_id.get(str(s.get("job_id")), 0)) for s in submissions)


def set_cell(run_dir: str | Path, job: str, label: Optional[str]) -> None:
    """Record the cell the job measures now (None: between cells) and point the training loop at the file."""
    path = shard_dir(run_dir, job) / PROGRESS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, json.dumps({"cell": label, "epoch": None, "epochs": None, "at": now_iso()}).encode())
    os.environ[PROGRESS_ENV] = str(path)


def report_epoch(epoch: int, epochs: int) -> None:
    """Called by the training loop after each epoch: record it in the job's progress file, if there is one."""
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data.update(epoch=epoch, epochs=epochs, at=now_iso())
        replace_atomically(Path(path), json.dumps(data).encode())
    except (OSError, ValueError):
        pass  # progress is a courtesy: never fail a training over it


def read_progress(run_dir: str | Path, job: str) -> Optional[dict[str, Any]]:
    try:
        return json.loads((shard_dir(run_dir, job) / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def progress_text(progress: Optional[dict[str, Any]]) -> Optional[str]:
    """``"dbra: epoch 3/10"`` (or the cell alone before its first epoch); None when the job measures nothing."""
    if not progress or not progress.get("cell"):
        return None
    if progress.get("epoch") is not None:
        return f"{progress['cell']}: epoch {progress['epoch']}/{progress.get('epochs') or '?'}"
    return str(progress["cell"])


def remember_states(ledger: dict[str, Any], raw: dict[str, str]) -> bool:
    """Store in each submission the scheduler's state ``raw[job_id]`` when it knows one (UNKNOWN never replaces a
    known state); True when the ledger changed (to be written)."""
    changed = False
    for job in ledger.get("jobs", []):
        for sub in job.get("submissions", []):
            state = raw.get(sub.get("job_id"))
            if state and state != "UNKNOWN" and sub.get("state") != state:
                sub["state"], sub["state_at"] = state, now_iso()
                changed = True
    return changed
