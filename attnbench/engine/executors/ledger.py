"""``RUN_DIR/jobs.json``: the jobs of an executor run, and what state each is in now.

The ledger lists every job: its name, cells (by ``cell_id``), device kind, and every submission of it (scheduler
job id, time, log files). Only the parent writes it (atomically, like the manifest). A job's state is derived, not
stored, so ``attnbench status`` is right even when the parent is gone:

* ``done``: every cell of the job has a final row (in its shard or merged) and the job is no longer running;
* ``queued`` / ``running``: the scheduler says so (Slurm: ``squeue``, else ``sacct``; local: the process), even
  when every cell already has its row (the job is still ending);
  a ``local`` job the parent has not submitted yet (``max_parallel``) is ``queued`` too;
* ``failed (<REASON>)``: the job is over and cells are missing; the reason is the scheduler's final state
  (``CANCELLED``, ``TIMEOUT``, ``NODE_FAIL``, ``OUT_OF_MEMORY``, ``FAILED``, ...) or the job's error. When the
  scheduler has forgotten the job (Slurm without accounting), the last state recorded in the ledger stands
  (:func:`attnbench.core.job_record.remember_states`): never ``UNKNOWN`` over a known state.

A job's ``tries`` count every submission and every re-queue of one (:func:`~attnbench.core.job_record.
count_tries`); ``history`` lists each submission's last known state.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

from ...core.results import finished_ids, read_rows, replace_atomically
from ...core.job_record import count_tries, progress_text, read_progress, read_starts
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
    #: the scheduler's raw state of the latest submission as seen now (None: not submitted)
    raw: Optional[str] = None
    #: submissions, each counted once per start (a re-queue keeps the job id)
    tries: int = 0
    #: each submission's last known state, oldest first (e.g. ["CANCELLED", "RUNNING"])
    history: list = dataclasses.field(default_factory=list)
    #: what the job is measuring now, e.g. "dbra: epoch 3/10" (None: nothing reported)
    progress: Optional[str] = None

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
    from ..parent_watch import process_alive

    try:
        return "RUNNING" if process_alive(int(job_id)) else "FINISHED"
    except ValueError:
        return "FINISHED"


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
        raw = _known_state(sub, live_states) if sub is not None else None
        if sub is None:
            state = "done" if n_done == len(cells) else "queued"
        elif raw in _SLURM_QUEUED:
            state = "queued"
        elif raw in _SLURM_RUNNING:
            state = "running"
        elif n_done == len(cells):
            state = "done"
        elif raw.startswith("gone"):
            state = f"failed ({raw})"
        else:
            reason = _result_error(sub) or ("ended early" if raw in ("COMPLETED", "FINISHED") else raw)
            state = f"failed ({reason})"
        submissions = job.get("submissions", [])
        history = [s.get("state") or "?" for s in submissions[:-1]] + ([raw] if sub is not None else [])
        progress = progress_text(read_progress(run_dir, job["name"])) if state == "running" else None
        out.append(JobStatus(job["name"], state, sub["job_id"] if sub else None, n_done, len(cells),
                             sub.get("stdout") if sub else None, sub.get("stderr") if sub else None,
                             len(submissions), raw, count_tries(submissions, read_starts(run_dir, job["name"])),
                             history, progress))
    return out


def _known_state(sub: dict[str, Any], live_states: dict[str, str]) -> str:
    """The scheduler's state of a submission now, else the last one the ledger recorded: a final state stands (a
    cancelled job stays CANCELLED after Slurm forgets it); a job last seen queued or running that the scheduler no
    longer knows ended unseen."""
    raw = live_states.get(sub["job_id"], "UNKNOWN")
    if raw != "UNKNOWN":
        return raw
    last = sub.get("state")
    if not last:
        return "UNKNOWN"
    if last in _SLURM_QUEUED or last in _SLURM_RUNNING:
        return f"gone from the scheduler, last seen {last}"
    return last
