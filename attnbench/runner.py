"""Running a suite: plan the cells, write the manifest, measure each cell, append its row, resume after a stop.

:func:`plan` turns a suite (or a run directory to resume) into the cells still to measure; :func:`run` measures
them. Each finished cell is one durable line of ``results.jsonl`` (see :mod:`attnbench.results`), so a crash or
Ctrl-C loses only the cell in flight, and ``--resume RUN_DIR`` measures exactly the cells that have no row yet
(every status is final: ``ok``, ``failed``, ``oom``, ``skipped``). SIGTERM is handled like Ctrl-C.

``python -m attnbench.runner --cell JSON --outcome PATH`` is the child process of ``--isolate``
(:func:`attnbench.execute.child_main`).
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional, TextIO

from . import machine_load
from .cells import Cell, Expansion, expand, parse_only
from .errors import UserError
from .results import (SCHEMA_VERSION, ResultsWriter, finished_ids, make_row, read_manifest, read_rows,
                      write_manifest, MANIFEST_FILE, RESULTS_FILE)
from .suite import Suite, load_suite, suite_from_dict

__all__ = ["Plan", "Summary", "plan", "run", "now_iso"]


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclasses.dataclass
class Plan:
    """What a run will do; ``--dry-run`` prints it."""

    suite: Suite
    suite_path: Optional[str]
    run_dir: Path
    expansion: Expansion
    to_run: list[Cell]
    to_skip: list[tuple[Cell, str]]
    done: int = 0
    resume: bool = False
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: cell_id -> the baseline's cell it is timed against (interleaved), for the cells that have one
    baselines: dict[str, Cell] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Summary:
    run_dir: Path
    counts: dict[str, int]
    ran: int
    interrupted: bool
    elapsed_s: float
    problems: list[tuple[str, str, str]]


def _default_run_dir(suite: Suite) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("runs") / f"{suite.name}-{stamp}"
    n = 2
    while path.exists():
        path = Path("runs") / f"{suite.name}-{stamp}-{n}"
        n += 1
    return path


def _load_for_resume(resume: Path, suite_path: Optional[str]) -> tuple[Suite, Optional[str], dict[str, Any]]:
    if not (resume / MANIFEST_FILE).exists():
        raise UserError(f"--resume {resume}: no {MANIFEST_FILE} there; expected a directory made by attnbench run")
    manifest = read_manifest(resume)
    if suite_path is None:
        suite = suite_from_dict(manifest["suite"], source=f"{resume / MANIFEST_FILE} (suite)")
        return suite, manifest.get("suite_path"), manifest
    suite = load_suite(suite_path)
    if suite.name != manifest["suite"]["name"]:
        raise UserError(f"--resume {resume}: that run is of suite {manifest['suite']['name']!r}, "
                        f"but {suite_path} is suite {suite.name!r}")
    return suite, suite_path, manifest


def plan(suite_path: Optional[str], *, out: Optional[str] = None, only: Optional[str] = None,
         resume: Optional[str] = None, device: Optional[str] = None,
         cuda_available: Optional[bool] = None) -> Plan:
    """Load the suite (or the run to resume), expand it on this machine and subtract the cells already done.

    Args:
        suite_path: the suite YAML; optional with ``resume`` (the manifest holds the resolved suite).
        out: the run directory (default ``runs/<suite>-<YYYYmmdd-HHMMSS>``); must not hold results yet.
        only: a ``--only`` filter (:func:`attnbench.cells.parse_only`); on resume, the original run's by default.
        resume: a run directory to complete.
        device: replaces the suite's device axis; on resume, the original run's by default.
        cuda_available: defaults to ``torch.cuda.is_available()``.
    """
    import torch

    from .probe import Probe

    if resume and out:
        raise UserError("--resume and --out both name a run directory; give one of them")
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    done: set[str] = set()
    if resume:
        run_dir = Path(resume)
        suite, suite_path, manifest = _load_for_resume(run_dir, suite_path)
        options = manifest.get("options", {})
        only = only if only is not None else options.get("only")
        device = device if device is not None else options.get("device")
        done = finished_ids(read_rows(run_dir))
    elif suite_path is None:
        raise UserError("give a SUITE file to run (or --resume RUN_DIR)")
    else:
        suite = load_suite(suite_path)
        run_dir = Path(out) if out else _default_run_dir(suite)
        if (run_dir / RESULTS_FILE).exists() and (run_dir / RESULTS_FILE).stat().st_size:
            raise UserError(f"--out {run_dir}: it already holds results; resume it with --resume {run_dir} "
                            "or choose another directory")
    expansion = expand(suite, cuda_available=cuda_available, device=device, probe=Probe())
    # from the whole suite: a --only that leaves the baseline out still pairs each cell with it
    baselines = expansion.baselines(suite.baseline) if "latency" in suite.metrics else {}
    if only:
        expansion = expansion.select(parse_only(only))
        if not expansion.cells and not expansion.skipped:
            raise UserError(f"--only {only!r} matches none of the suite's cells; `attnbench run {suite_path or ''} "
                            "--dry-run` lists them")
    to_run = [c for c in expansion.cells if c.cell_id not in done]
    to_skip = [(c, r) for c, r in expansion.skipped if c.cell_id not in done]
    return Plan(suite, suite_path, run_dir, expansion, to_run, to_skip, done=len(done), resume=bool(resume),
                options={"only": only, "device": device}, baselines=baselines)


def _start_manifest(p: Plan, argv: list[str], isolate: bool) -> dict[str, Any]:
    from .env import capture

    environment = {**capture(), "load_at_start": machine_load.sample()}
    started = now_iso()
    if p.resume:
        manifest = read_manifest(p.run_dir)
        manifest.setdefault("resumes", []).append({"started_at": started, "ended_at": None, "argv": argv,
                                                   "isolate": isolate, "environment": environment})
        manifest["ended_at"] = None
        return manifest
    return {
        "schema_version": SCHEMA_VERSION, "run_id": p.run_dir.name, "suite": p.suite.to_dict(),
        "suite_path": p.suite_path, **environment, "started_at": started, "ended_at": None, "argv": argv,
        "options": {**p.options, "isolate": isolate},
        "cells": {"to_run": len(p.to_run), "skipped": len(p.to_skip), "excluded": p.expansion.excluded,
                  "excluded_cells": [_excluded_entry(c, i) for c, i in p.expansion.excluded_cells]},
        "counts": None, "interrupted": None, "resumes": [],
    }


def _excluded_entry(cell: Cell, index: int) -> dict[str, Any]:
    """What the report needs to draw and list a cell the suite's ``exclude`` dropped."""
    ident = cell.identity()
    keys = ("label", "attention", "height", "width", "batch", "pass", "dtype", "device", "mode")
    return {**{k: ident[k] for k in keys}, "reason": f"excluded by the suite (exclude entry {index})"}


def _final_counts(run_dir: Path) -> dict[str, int]:
    latest = {r["cell_id"]: r.get("status") for r in read_rows(run_dir) if "cell_id" in r}
    return dict(collections.Counter(latest.values()))


class _Terminated(KeyboardInterrupt):
    """SIGTERM, treated as Ctrl-C: the finished cells are on disk, the run can be resumed."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def run(p: Plan, *, isolate: bool = False, argv: Optional[list[str]] = None, progress: bool = True,
        stream: Optional[TextIO] = None) -> Summary:
    """Measure the plan's cells, appending one row per cell; Ctrl-C/SIGTERM stop cleanly (``interrupted``)."""
    from .execute import CellRunner, IsolatedRunner
    from .progress import Progress

    cell_runner = CellRunner(p.suite.metrics, dict(p.suite.settings), p.suite.seed)  # imports metrics once
    executor = IsolatedRunner(cell_runner) if isolate else cell_runner
    p.run_dir.mkdir(parents=True, exist_ok=True)
    manifest = _start_manifest(p, list(argv if argv is not None else sys.argv), isolate)
    write_manifest(p.run_dir, manifest)
    run_id, t0 = p.run_dir.name, time.perf_counter()
    ran, interrupted, problems = 0, False, []
    old_handler = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    bar = Progress(len(p.to_run), stream=stream, enabled=progress)
    try:
        with ResultsWriter(p.run_dir) as writer:
            for cell, reason in p.to_skip:
                writer.append(make_row(cell, run_id, status="skipped", error=reason, error_stage="probe",
                                       started_at=now_iso(), duration_s=0.0))
            for cell in p.to_run:
                bar.start(cell)
                started, c0, load_before = now_iso(), time.perf_counter(), machine_load.sample()
                outcome = executor.measure(cell, p.baselines.get(cell.cell_id))
                duration = time.perf_counter() - c0
                columns = {**outcome.columns, **machine_load.cell_columns(load_before, machine_load.sample())}
                writer.append(make_row(cell, run_id, status=outcome.status, error=outcome.error,
                                       error_stage=outcome.error_stage, started_at=started, duration_s=duration,
                                       columns=columns))
                ran += 1
                if outcome.status != "ok":
                    problems.append((cell.describe(), outcome.status, outcome.error or ""))
                bar.finish(cell, outcome.status, outcome.error, duration)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    counts = _final_counts(p.run_dir)
    ended = now_iso()
    manifest.update(ended_at=ended, counts=counts, interrupted=interrupted,
                    load=machine_load.summarize(read_rows(p.run_dir)))
    if p.resume:
        manifest["resumes"][-1]["ended_at"] = ended
    write_manifest(p.run_dir, manifest)
    return Summary(p.run_dir, counts, ran, interrupted, time.perf_counter() - t0, problems)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    from .execute import child_main

    sys.exit(child_main())
