"""The life of a run directory, one owner for the in-process runner and the batch executors alike.

A run (:func:`attnbench.engine.runner.run` or :func:`attnbench.engine.executors.submit.run_with_executor`):

1. :func:`open_run_dir` creates the directory, takes its lock (:mod:`attnbench.engine.run_lock`), refuses a
   directory another run filled meanwhile, moves damaged lines aside and drops the cells already finished;
2. :func:`start_manifest` builds the manifest (environment, suite, options, cells; on ``--resume`` one more entry
   of ``resumes``), which the caller writes;
3. after :func:`catch_sigterm`, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``), so Ctrl-C and
   a scheduler's kill both end the run cleanly with every finished cell on disk;
4. :func:`finish_manifest` records the end state: ``ended_at``, ``counts``, ``interrupted``, ``error`` and the
   machine ``load`` over the run's rows (:func:`attnbench.core.machine_load.summarize`).
"""
from __future__ import annotations

import collections
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..core import machine_load
from ..core.errors import UserError, os_error_text
from ..core.results import (RESULTS_FILE, SCHEMA_VERSION, finished_ids, now_iso, read_manifest, read_rows, repair,
                            write_manifest)

if TYPE_CHECKING:  # the plan imports the suite schema and the cells; this module needs only their attributes
    from ..suite.cells import Cell
    from .run_lock import RunLock
    from .runner import Plan

__all__ = ["Terminated", "done_ids", "final_counts", "finish_manifest", "open_run_dir", "refuse_used",
           "catch_sigterm", "main_thread", "start_manifest"]


def refuse_used(run_dir: Path) -> None:
    """A new run may not write into a directory that holds results (or is not a directory)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir}: exists and is not a directory")
    results = run_dir / RESULTS_FILE
    if results.exists() and results.stat().st_size:
        raise UserError(f"--out {run_dir}: it already holds results; resume it with --resume {run_dir} "
                        "or choose another directory")


def done_ids(rows: list[dict[str, Any]], retry_failed: bool) -> set[str]:
    """The cells a run directory holds a final row of; with ``retry_failed``, less those to measure again."""
    done = finished_ids(rows)
    if retry_failed:
        from .failure_policy import retryable_ids

        done -= retryable_ids(rows)
    return done


def open_run_dir(p: "Plan") -> "RunLock":
    """Create the run directory and take its lock; refuse a directory another run filled meanwhile."""
    from .run_lock import RunLock

    if p.run_dir.exists() and not p.run_dir.is_dir():
        raise UserError(f"--out {p.run_dir}: exists and is not a directory")
    try:
        p.run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(p.run_dir).acquire()
    except OSError as e:
        raise UserError(os_error_text(e, "cannot create the run directory")) from None
    try:
        if not p.resume:
            refuse_used(p.run_dir)
        repair(p.run_dir)  # damaged lines go to results.damaged.jsonl before anything is appended
        done = done_ids(read_rows(p.run_dir), p.retry_failed)  # what a run that held the lock before us finished
        p.to_run = [c for c in p.to_run if c.cell_id not in done]
        p.to_skip = [(c, r) for c, r in p.to_skip if c.cell_id not in done]
    except BaseException:
        lock.release()
        raise
    return lock


def start_manifest(p: "Plan", argv: list[str], isolate: Any) -> dict[str, Any]:
    """The manifest of a run that starts now (on ``--resume``: the old one with one more ``resumes`` entry)."""
    from .env import capture
    from .machine_peak import for_suite

    environment = {**capture(), "load_at_start": machine_load.sample(), **for_suite(p.suite, p.options.get("device"))}
    started = now_iso()
    if p.resume:
        manifest = dict(p.manifest or read_manifest(p.run_dir))
        manifest.setdefault("resumes", []).append({"started_at": started, "ended_at": None, "argv": argv,
                                                   "isolate": isolate, "environment": environment})
        manifest.update(ended_at=None, error=None)
        return manifest
    return {
        "schema_version": SCHEMA_VERSION, "run_id": p.run_dir.name, "suite": p.suite.to_dict(),
        "suite_path": p.suite_path, **environment, "started_at": started, "ended_at": None, "argv": argv,
        "options": {**p.options, "isolate": isolate},
        "cells": {"to_run": len(p.to_run), "skipped": len(p.to_skip), "excluded": p.expansion.excluded,
                  "excluded_cells": [_excluded_entry(c, i) for c, i in p.expansion.excluded_cells]},
        "counts": None, "interrupted": None, "error": None, "resumes": [],
    }


def _excluded_entry(cell: "Cell", index: int) -> dict[str, Any]:
    """What the report needs to draw and list a cell the suite's ``exclude`` dropped."""
    ident = cell.identity()
    keys = ("label", "attention", "height", "width", "batch", "pass", "dtype", "device", "mode")
    return {**{k: ident[k] for k in keys}, "reason": f"excluded by the suite (exclude entry {index})"}


def final_counts(run_dir: Path) -> dict[str, int]:
    """Rows per status, each cell counted once (its last row)."""
    try:
        rows = read_rows(run_dir)
    except UserError:
        return {}
    latest = {r["cell_id"]: r.get("status") for r in rows if "cell_id" in r}
    return dict(collections.Counter(latest.values()))


def finish_manifest(p: "Plan", manifest: Optional[dict[str, Any]], interrupted: bool,
                    failure: Optional[OSError] = None, **extra: Any) -> dict[str, int]:
    """Record the end state (and ``extra`` fields, e.g. an executor's ``missing_cells``); the counts of rows per
    status. A manifest that cannot be written after a file-system error is left as it was (the error is what the
    user sees)."""
    counts = final_counts(p.run_dir)
    if manifest is None:
        return counts
    ended = now_iso()
    manifest.update(ended_at=ended, counts=counts, interrupted=interrupted,
                    error=os_error_text(failure) if failure is not None else None, load=_load_summary(p.run_dir),
                    **extra)
    if p.resume:
        manifest["resumes"][-1]["ended_at"] = ended
    try:
        write_manifest(p.run_dir, manifest)
    except OSError as e:
        if failure is None:
            raise UserError(os_error_text(e, "cannot write the manifest")) from None
    return counts


def _load_summary(run_dir: Path) -> Optional[dict[str, Any]]:
    try:
        return machine_load.summarize(read_rows(run_dir))
    except UserError:
        return None


class Terminated(KeyboardInterrupt):
    """SIGTERM, treated as Ctrl-C: the finished cells are on disk, the run can be resumed."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main_thread() -> bool:
    """Signal handlers can be set only from the main thread (a run started from a worker thread keeps Python's)."""
    return threading.current_thread() is threading.main_thread()


def catch_sigterm() -> Callable[[], None]:
    """From now on SIGTERM raises :class:`Terminated` (from the main thread; elsewhere nothing changes); returns the
    function that puts the previous handler back."""
    if not main_thread():
        return lambda: None
    old = signal.signal(signal.SIGTERM, _on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, old)
