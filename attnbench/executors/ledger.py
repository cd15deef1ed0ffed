"""``RUN_DIR/jobs.json``: the jobs of an executor run, and what state each is in now.

The ledger lists every job: its name, cells (by ``cell_id``), device kind, and every submission of it (scheduler
job id, time, log files). Only the parent writes it (atomically, like the manifest). A job's state is derived, not
stored, so ``attnbench status`` is right even when the parent is gone:

* ``done``: every cell of the job has a final row (in its shard or merged);
* ``queued`` / ``running``: the scheduler says so (Slurm: ``squeue``, else ``sacct``; local: the process);
  a ``local`` job the parent has not submitted yet (``max_parallel``) is ``queued`` too;
* ``failed (<REASON>)``: the job is over and cells are missing; the reason is the scheduler's final state
  (``CANCELLED``, ``TIMEOUT``, ``NODE_FAIL``, ``OUT_OF_MEMORY``, ``FAILED``, ...) or the job's error.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

from ..results import finished_ids, read_rows
from .atomic import replace_atomically
from .shards import rows_by_job

__all__ = ["LEDGER_FILE", "read_ledger", "write_ledger", "JobStatus", "job_statuses", "slurm_states"]

LEDGER_FILE = "jobs.json"
_SLURM_QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"}
_SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}


def read_ledger(run_dir: str | Path) -> Optional[dict[str, Any]]:
    path = Path(run_dir) / LEDGER_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def write_ledger(run_dir: str | Path, ledger: dict[str, Any]) -> None:
    replace_atomically(Path(run_dir) / LEDGER_FILE, (json.dumps(ledger, indent=1) + "\n").encode())


@dataclasses.dataclass
class JobStatus:
    name: str
    state: str                 # done | queued | running | failed (<reason>)
    job_id: Optional[str]      # the scheduler's id of the latest submission (None: not submitted yet)
    cells_done: int
    cells: int
    stdout: Optional[str]
    stderr: Optional[str]
    submissions: int

    @property
    def live(self) -> bool:
        return self.state in ("queued", "running")


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm job id -> state (``PENDING``, ``RUNNING``, ``COMPLETED``, ``CANCELLED``, ...); ids Slurm no longer
    knows are missing. ``squeue`` covers jobs that are queued, running or ended less than ``MinJobAge`` ago;
    ``sacct`` (when accounting is on) the older ones."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    states = _squeue(job_ids, "all", "%T")
    rest = [j for j in job_ids if j not in states]
    if rest and shutil.which("sacct"):
        out = _quiet(["sacct", "-n", "-P", "-X", "-j", ",".join(rest), "-o", "JobID,State"])
        for line in out.splitlines():
            jid, _, state = line.strip().partition("|")
            if jid in rest:
                states[jid] = state.split()[0] if state else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
    return states


#: squeue pending reasons that waiting never clears: the request exceeds what the partition or its nodes offer
#: (e.g. two tasks on a one-CPU node: ``PartitionConfig``) or names what does not exist. Slurm keeps such a job
#: queued (an administrator could still change the partition), so without a word the run would wait forever.
SLURM_NEVER_STARTS = frozenset({"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
                                "InvalidAccount", "InvalidQOS"})


def slurm_stuck(job_ids: list[str]) -> dict[str, str]:
    """Slurm job id -> pending reason, for the pending jobs among ``job_ids`` whose reason is in
    :data:`SLURM_NEVER_STARTS`."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    reasons = _squeue(job_ids, "PENDING", "%r")
    return {jid: reason for jid, reason in reasons.items() if reason in SLURM_NEVER_STARTS}


def _squeue(job_ids: list[str], states: str, field: str) -> dict[str, str]:
    """Job id -> one ``squeue`` output ``field`` (``%T`` state, ``%r`` reason) of the jobs among ``job_ids`` in
    ``states``; ids squeue does not list are missing."""
    out = _quiet(["squeue", "-h", "-t", states, "-j", ",".join(job_ids), "-o", f"%i|{field}"])
    pairs = (line.strip().partition("|") for line in out.splitlines())
    return {jid: value for jid, _, value in pairs if jid in job_ids}


def _quiet(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _local_state(job_id: str) -> str:
    """A local job's controller process: RUNNING while alive (and not a zombie), else FINISHED."""
    try:
        stat = Path(f"/proc/{int(job_id)}/stat").read_text()
    except (OSError, ValueError):
        return "FINISHED"
    return "FINISHED" if stat.rsplit(")", 1)[-1].split()[0] == "Z" else "RUNNING"


def _result_error(sub: dict[str, Any]) -> Optional[str]:
    """The last line of the error a submitit job pickled as its result, if it failed with one."""
    path = Path(sub.get("result") or "")
    if not path.is_file():
        return None
    try:
        import pickle

        outcome, value = pickle.loads(path.read_bytes())
    except Exception:  # noqa: BLE001 - an unreadable result is reported as such
        return "unreadable result"
    if outcome != "error":
        return None
    lines = [ln for ln in str(value).strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "error"


def job_statuses(run_dir: str | Path, ledger: dict[str, Any],
                 live_states: Optional[dict[str, str]] = None) -> list[JobStatus]:
    """The state of every job of ``ledger`` (see the module docstring).

    Args:
        live_states: scheduler id -> raw state, for the jobs the caller knows (the parent holds submitit's job
            objects of its own submissions); the others are asked from the scheduler.
    """
    done = finished_ids(read_rows(run_dir))
    by_job = rows_by_job(run_dir)
    cluster = ledger.get("executor", "local")
    latest = {j["name"]: (j["submissions"][-1] if j.get("submissions") else None) for j in ledger["jobs"]}
    ids = [s["job_id"] for s in latest.values() if s]
    live_states = dict(live_states or {})
    unknown = [i for i in ids if i not in live_states]
    if unknown:
        live_states.update(slurm_states(unknown) if cluster == "slurm" else {i: _local_state(i) for i in unknown})
    out = []
    for job in ledger["jobs"]:
        cells = job["cells"]
        have = done | by_job.get(job["name"], set())
        n_done = sum(1 for c in cells if c in have)
        sub = latest[job["name"]]
        if n_done == len(cells):
            state = "done"
        elif sub is None:
            state = "queued"
        else:
            raw = live_states.get(sub["job_id"], "UNKNOWN")
            if raw in _SLURM_QUEUED:
                state = "queued"
            elif raw in _SLURM_RUNNING:
                state = "running"
            else:
                reason = _result_error(sub) or ("ended early" if raw in ("COMPLETED", "FINISHED") else raw)
                state = f"failed ({reason})"
        out.append(JobStatus(job["name"], state, sub["job_id"] if sub else None, n_done, len(cells),
                             sub.get("stdout") if sub else None, sub.get("stderr") if sub else None,
                             len(job.get("submissions", []))))
    return out
