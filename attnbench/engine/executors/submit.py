"""The parent of an executor run: submit the jobs with submitit, merge their shards, follow their states.

:func:`run_with_executor` is what ``attnbench run --executor local|slurm`` calls instead of
:func:`attnbench.engine.runner.run`. It writes the same manifest (plus ``options.executor``), merges rows left in the
shards by an earlier session, works out which cells still lack a row and are not held by a queued or running job,
groups them into new jobs, submits them (``local``: at most ``max_parallel`` at once; ``slurm``: all), and then,
every ``poll_s`` seconds, merges the shards into ``results.jsonl`` and asks for the jobs' states, until no job is
queued or running. With ``wait=False`` it returns right after submitting; ``attnbench run --resume RUN_DIR``
collects later (and re-submits what is missing).

Ctrl-C or SIGTERM in the parent: Slurm jobs keep running (the scheduler owns them; ``scancel`` stops them);
``local`` jobs are cancelled, since they would go on competing for this machine. Either way the rows measured so
far are merged and the run can be resumed. Local jobs also die when the parent is SIGKILLed (their task watches
the parent's pid, :func:`attnbench.engine.parent_watch.watch_parent`), except with ``wait=False`` (``--no-wait``), where
they are meant to outlive it; they are started with SIGINT ignored, so a Ctrl-C in the terminal reaches only the
parent, which kills them (no submitit traceback).

A job whose cells are not all measured when it ends (cancelled, timed out, its node lost) is submitted again
under its own name, as another submission of the same ledger entry, so the ledger keeps every try.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional, TextIO

from ...core.errors import UserError
from ...core.results import finished_ids, make_row, now_iso, read_manifest, read_rows, write_manifest
from ..lifecycle import catch_sigterm, finish_manifest, main_thread, open_run_dir, start_manifest
from ..runner import Summary
from ...suite.executor_config import EXECUTORS, ExecutorSection
from .grouping import JobSpec, group_cells, job_parameters
from .ledger import job_statuses, read_ledger, slurm_stuck, write_ledger
from .shard_job import ShardJob
from .shards import merge_shards

__all__ = ["ExecutorSummary", "run_with_executor", "resolve_section"]


@dataclasses.dataclass
class ExecutorSummary(Summary):
    """What :func:`attnbench.commands.run_cmd.print_summary` prints, plus the jobs' side."""

    missing: int = 0
    jobs: list[Any] = dataclasses.field(default_factory=list)
    submitted: int = 0


def resolve_section(plan, overrides: Optional[dict[str, Any]]) -> ExecutorSection:
    """The suite's ``executor:`` section, then the resumed run's stored one, then the command-line flags."""
    section = plan.suite.executor or ExecutorSection()
    if plan.resume:
        stored = (read_manifest(plan.run_dir).get("options") or {}).get("executor") or {}
        section = section.merged({k: v for k, v in stored.items() if k != "name"})
    from pydantic import ValidationError

    try:
        return section.merged(overrides)
    except ValidationError as e:  # a flag's value: name the key, the rule and the value
        err = e.errors()[0]
        key = ".".join(str(k) for k in err["loc"])
        raise UserError(f"executor option {key}: {err['msg']}, got {err.get('input')!r}") from None


def _pythonpath_setup() -> list[str]:
    """Shell line that gives the job this process's import path (the job unpickles functions by reference)."""
    import shlex

    # the interpreter's own paths (stdlib, site-packages) come with sys.executable; the rest (the checkout, a
    # test's helper folder) the job must be told
    own = tuple(str(Path(p).resolve()) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix})
    paths = [p for p in sys.path if p and Path(p).is_dir() and not str(Path(p).resolve()).startswith(own)]
    return [f"export PYTHONPATH={shlex.quote(os.pathsep.join(paths))}${{PYTHONPATH:+:$PYTHONPATH}}"]


def _threads_setup(section: ExecutorSection) -> list[str]:
    # one CPU thread pool per allocated CPU, as DeiT-style launchers do; the latency metric records the count
    return [f"export OMP_NUM_THREADS={section.cpus_per_task}"] if section.cpus_per_task else []


def _make_executor(cluster: str, run_dir: Path, section: ExecutorSection, params: dict[str, Any]):
    try:
        import submitit
    except ImportError:
        raise UserError("--executor needs submitit: pip install submitit (see README, dependencies)") from None
    try:
        executor = submitit.AutoExecutor(folder=str(run_dir / "jobs" / "%j"), cluster=cluster,
                                         slurm_max_num_timeout=section.max_requeues)
    except RuntimeError as e:  # no srun on this machine
        raise UserError(f"--executor {cluster}: {e}") from None
    executor.update_parameters(**params)
    _drop_pattern_folder(run_dir)
    return executor


def _drop_pattern_folder(run_dir: Path) -> None:
    """submitit makes the folder pattern ``jobs/%j`` itself, literally (the executor here, a local job's controller
    again); only the per-job folders hold anything, so the empty pattern folder goes."""
    try:
        (run_dir / "jobs" / "%j").rmdir()
    except OSError:
        pass


class _Parent:
    """Submits and follows the jobs of one session."""

    def __init__(self, plan, cluster: str, section: ExecutorSection, runner_spec: dict[str, Any],
                 stream: Optional[TextIO], isolate: bool = False, wait: bool = True):
        self.p, self.cluster, self.section, self.spec, self.stream = plan, cluster, section, runner_spec, stream
        self.isolate = isolate
        #: local jobs of a parent that waits for them die with it (a --no-wait parent leaves them running)
        self.parent_pid = os.getpid() if (cluster == "local" and wait) else None
        self.run_dir = Path(plan.run_dir)
        self.ledger = read_ledger(self.run_dir) or {"executor": cluster, "jobs": []}
        if self.ledger.get("executor") != cluster:
            raise UserError(f"{self.run_dir}: its jobs ran with --executor {self.ledger.get('executor')}; "
                            f"resume it with the same executor")
        self.handles: dict[str, Any] = {}     # scheduler id -> submitit job (this session's submissions)
        self.pending: list[JobSpec] = []
        self.warned: set[str] = set()         # Slurm ids already reported as unable to start

    def say(self, text: str) -> None:
        if self.stream is not None:
            print(text, file=self.stream, flush=True)

    def plan_jobs(self, cells) -> list[JobSpec]:
        """Jobs for ``cells`` that lack a row and are not in a queued or running job; never-submitted ledger
        entries of an earlier session are dropped (their cells are planned again)."""
        statuses = {s.name: s for s in job_statuses(self.run_dir, self.ledger)}
        self.remember(list(statuses.values()))
        held: set[str] = set()
        keep = []
        for job in self.ledger["jobs"]:
            if not job.get("submissions"):
                continue
            keep.append(job)
            if statuses[job["name"]].live:
                held.update(job["cells"])
        self.ledger["jobs"] = keep
        todo = [c for c in cells if c.cell_id not in held]
        again = []  # failed jobs: their missing cells go again under the same name (one more try of that job)
        for job in keep:
            if statuses[job["name"]].state.startswith("failed"):
                mine = set(job["cells"])
                missing = [c for c in todo if c.cell_id in mine]
                if missing:
                    again.append(JobSpec(job["name"], missing, job["device"], bool(job.get("accuracy"))))
        taken = {c.cell_id for j in again for c in j.cells}
        todo = [c for c in todo if c.cell_id not in taken]
        first = 1 + max((int(j["name"].split("-")[1]) for j in keep), default=-1)
        jobs = group_cells(todo, self.section, accuracy="accuracy" in self.p.suite.metrics, first_index=first)
        for job in jobs:
            self.ledger["jobs"].append({"name": job.name, "device": job.device, "accuracy": job.accuracy,
                                        "cells": [c.cell_id for c in job.cells], "submissions": []})
        write_ledger(self.run_dir, self.ledger)
        self.pending = again + jobs
        return self.pending

    def _entry(self, name: str) -> dict[str, Any]:
        return next(j for j in self.ledger["jobs"] if j["name"] == name)

    def submit_some(self, live: int) -> int:
        """Submit pending jobs up to the parallel cap; the number submitted."""
        cap = self.section.max_parallel or (1 if self.cluster == "local" else len(self.pending) + live)
        n = 0
        while self.pending and live + n < cap:
            job = self.pending.pop(0)
            params = job_parameters(self.section, job, self.cluster, self.p.suite.name,
                                    setup=_pythonpath_setup() + _threads_setup(self.section))
            executor = _make_executor(self.cluster, self.run_dir, self.section, params)
            baselines = {c.cell_id: self.p.baselines[c.cell_id].identity() for c in job.cells
                         if c.cell_id in self.p.baselines}
            fn = ShardJob(str(self.run_dir), job.name, [c.record() for c in job.cells], self.spec,
                          isolate=self.isolate, baselines=baselines, parent_pid=self.parent_pid)
            try:
                with _sigint_ignored(self.cluster == "local"):
                    handle = executor.submit(fn)
            except Exception as e:  # noqa: BLE001 - sbatch refused (bad partition, account...): say which job
                raise UserError(f"submitting {job.name} to {self.cluster} failed: "
                                f"{str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}") from None
            self.handles[str(handle.job_id)] = handle
            self._entry(job.name)["submissions"].append({
                "job_id": str(handle.job_id), "submitted_at": now_iso(), "stdout": str(handle.paths.stdout),
                "stderr": str(handle.paths.stderr), "result": str(handle.paths.result_pickle),
                "cells": len(job.cells)})
            self.say(f"[{self.cluster}] submitted {job.name} ({len(job.cells)} cells, {job.device}) "
                     f"as job {handle.job_id}; log {handle.paths.stdout}")
            n += 1
        if n:
            write_ledger(self.run_dir, self.ledger)
        return n

    def live_states(self) -> Optional[dict[str, str]]:
        """Local jobs of this session: submitit's view of the process (no zombie confusion)."""
        if self.cluster != "local":
            return None
        return {jid: ("RUNNING" if h.state == "RUNNING" else "FINISHED") for jid, h in self.handles.items()}

    def warn_stuck(self, statuses) -> None:
        """One warning per queued Slurm job whose pending reason says it cannot start as requested."""
        queued = {s.job_id: s.name for s in statuses if s.state == "queued" and s.job_id}
        for jid, reason in slurm_stuck(sorted(queued)).items():
            if jid in self.warned:
                continue
            self.warned.add(jid)
            warnings.warn(f"{queued[jid]} (Slurm job {jid}) cannot start: its pending reason is {reason}, i.e. it "
                          "asks for more than the partition offers (compare tasks_per_node, cpus_per_task, gpus, "
                          "mem and time with `sinfo -o '%P %c %m %l %G'`); Slurm keeps it queued. Cancel it "
                          f"(scancel {jid}), fix the executor settings and run again with --resume",
                          stacklevel=1)

    def cancel_local(self) -> None:
        """Kill each local job's process tree (controller, task, the task's children): submitit's ``cancel``
        sends SIGINT, which the jobs ignore (see the module docstring) and which made the controller print a
        traceback."""
        for handle in self.handles.values():
            process = getattr(handle, "_process", None)
            if process is not None and process.poll() is None:
                kill_tree(process.pid)
                process.wait()

    def remember(self, statuses) -> None:
        """Keep each submission's last known scheduler state in the ledger (never UNKNOWN over a known one)."""
        from ...core.job_record import remember_states

        if remember_states(self.ledger, {s.job_id: s.raw for s in statuses if s.job_id and s.raw}):
            write_ledger(self.run_dir, self.ledger)


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process under it (Linux ``/proc``; elsewhere ``pid`` alone)."""
    family, todo = [], [pid]
    while todo:
        p = todo.pop()
        family.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    for p in family:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


@contextlib.contextmanager
def _sigint_ignored(active: bool):
    """SIGINT ignored while a local job starts: its processes inherit that, so a Ctrl-C reaches only the parent."""
    if not active or not main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def run_with_executor(p, cluster: str, overrides: Optional[dict[str, Any]] = None, *, wait: bool = True,
                      isolate: bool = False, argv: Optional[list[str]] = None, progress: bool = True,
                      stream: Optional[TextIO] = None) -> ExecutorSummary:
    """Measure the plan's cells in batch jobs; see the module docstring. ``isolate``: each cell in a fresh
    process inside its job (``attnbench run --isolate``). The parent holds the run directory's lock for its whole
    session (the jobs write only their own shards and need none)."""
    if cluster not in EXECUTORS:
        raise UserError(f"--executor {cluster!r}: expected one of inline, {', '.join(EXECUTORS)}")
    lock = open_run_dir(p)
    try:
        return _run_locked(p, cluster, overrides, wait=wait, isolate=bool(isolate), argv=argv, progress=progress,
                           stream=stream)
    finally:
        lock.release()


def _run_locked(p, cluster: str, overrides: Optional[dict[str, Any]], *, wait: bool, isolate: bool,
                argv: Optional[list[str]], progress: bool, stream: Optional[TextIO]) -> ExecutorSummary:
    from ..execute import CellRunner

    section = resolve_section(p, overrides)
    spec = CellRunner(p.suite.metrics, dict(p.suite.settings), p.suite.seed).locations()
    run_dir = Path(p.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stream = (stream or sys.stderr) if progress else None
    t0 = time.perf_counter()
    manifest = start_manifest(p, list(argv if argv is not None else sys.argv), isolate)
    manifest.setdefault("options", {})["executor"] = {"name": cluster, **section.model_dump()}
    write_manifest(run_dir, manifest)
    parent = _Parent(p, cluster, section, spec, stream, isolate, wait)

    run_id = run_dir.name
    skipped = [make_row(c, run_id, status="skipped", error=r, error_stage="probe", started_at=now_iso(),
                        duration_s=0.0) for c, r in p.to_skip]
    added = merge_shards(run_dir, skipped).added
    done = finished_ids(read_rows(run_dir))
    earlier = _count_live(run_dir, parent)
    jobs = parent.plan_jobs([c for c in p.to_run if c.cell_id not in done])
    parent.say(f"[{cluster}] {len(jobs)} new jobs for {sum(len(j.cells) for j in jobs)} cells"
               + (f"; {earlier} earlier jobs still queued or running" if earlier else ""))

    interrupted = False
    restore_sigterm = catch_sigterm()
    submitted = 0
    try:
        submitted += parent.submit_some(_count_live(run_dir, parent))
        while wait:
            statuses = job_statuses(run_dir, parent.ledger, parent.live_states())
            parent.remember(statuses)
            live = sum(1 for s in statuses if s.live and s.job_id is not None)
            if parent.pending:
                submitted += parent.submit_some(live)
            new = merge_shards(run_dir).added
            added += new
            if new:
                parent.say(f"[{cluster}] +{len(new)} rows merged ({len(finished_ids(read_rows(run_dir)))} in "
                           f"results.jsonl); jobs: " + _state_counts(statuses))
            if not parent.pending and not any(s.live for s in statuses):
                break
            if cluster == "slurm":
                parent.warn_stuck(statuses)
            time.sleep(section.poll_s)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (lifecycle.Terminated)
        interrupted = True
        if cluster == "local":
            parent.cancel_local()
    finally:
        restore_sigterm()
    added += merge_shards(run_dir).added
    _drop_pattern_folder(run_dir)
    statuses = job_statuses(run_dir, parent.ledger, parent.live_states())
    parent.remember(statuses)
    expected = {c.cell_id for c in p.expansion.cells} | {c.cell_id for c, _ in p.expansion.skipped}
    missing = len(expected - finished_ids(read_rows(run_dir)))
    counts = finish_manifest(p, manifest, interrupted, missing_cells=missing)
    problems = [(f"{r['label']} {r['height']}x{r['width']} b{r['batch']} {r['device']} {r['pass']}", r["status"],
                 r.get("error") or "") for r in added if r["status"] not in ("ok", "skipped")]
    problems += [(f"{s.name} (job {s.job_id})", "job " + s.state, f"{s.cells - s.cells_done} cells without a row; "
                  f"log {s.stderr}") for s in statuses if s.state.startswith("failed")]
    return ExecutorSummary(run_dir, counts, sum(1 for r in added if r["status"] != "skipped"), interrupted,
                           time.perf_counter() - t0, problems, missing, statuses, submitted)


def _count_live(run_dir: Path, parent: _Parent) -> int:
    return sum(1 for s in job_statuses(run_dir, parent.ledger, parent.live_states()) if s.live and s.job_id)


def _state_counts(statuses) -> str:
    counts: dict[str, int] = {}
    for s in statuses:
        key = "failed" if s.state.startswith("failed") else s.state
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in counts.items())
