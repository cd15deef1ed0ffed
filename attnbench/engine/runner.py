"""Running a suite: plan the cells, write the manifest, measure each cell, append its row, resume after a stop.

:func:`plan` turns a suite (or a run directory to resume) into the cells still to measure; :func:`run` measures
them. Each finished cell is one durable line of ``results.jsonl`` (see :mod:`attnbench.core.results`), so a crash or
Ctrl-C loses only the cell in flight, and ``--resume RUN_DIR`` measures exactly the cells that have no row yet
(every status is final: ``ok``, ``failed``, ``oom``, ``skipped``). SIGTERM is handled like Ctrl-C.

``python -m attnbench.engine.runner --cell JSON --outcome PATH`` is the child process of ``--isolate``
(:func:`attnbench.engine.execute.child_main`).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, TextIO

from ..core import machine_load
from .cell_budget import CEILING_S
from ..suite.cells import Cell, Expansion, count_cells, expand, parse_only
from ..core.errors import UserError, os_error_text
from ..core.results import (CELLS_DIR, MANIFEST_FILE, RUN_DIR_ENV, SCHEMA_VERSION, ResultsWriter, make_row, now_iso,
                            quarantine_manifest, read_manifest, read_rows, write_manifest)
from ..suite.schema import Suite
from ..suite.load import load_suite, suite_from_dict
from .shared_baseline import LatencyGroups, group_timeout
from .lifecycle import (catch_sigterm, done_ids, finish_manifest, open_run_dir, refuse_used,
                        start_manifest)

__all__ = ["Plan", "Summary", "plan", "run", "MAX_CELLS", "DEFAULT_TIMEOUT_S", "cell_timeout"]

#: a suite that expands to more cells than this is refused unless ``--max-cells`` allows it (a typo in an axis can
#: make a grid of millions of cells: days of measuring, and gigabytes just to plan it)
MAX_CELLS = 10_000
#: the longest per-cell time limit when the suite sets no ``settings.timeout_s`` (none for suites that train:
#: ``accuracy``); each cell's own follows from its expected cost (:mod:`attnbench.engine.cell_budget`)
DEFAULT_TIMEOUT_S = CEILING_S


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
    #: the manifest of the run being resumed (rebuilt from the rows when the file was missing or corrupt)
    manifest: Optional[dict[str, Any]] = None
    #: why the manifest had to be rebuilt (the damaged file is moved aside when the run starts)
    rebuilt: Optional[str] = None
    #: cell_id -> the cell's time limit in seconds (None: none); see :mod:`attnbench.engine.cell_budget`
    timeouts: dict[str, Optional[float]] = dataclasses.field(default_factory=dict)
    #: cell_id -> expected multiply-adds of one call (None: no cost model), for the ETA and the suite's latency
    #: budget; the cells to run and their baselines
    work: dict[str, Optional[float]] = dataclasses.field(default_factory=dict)
    #: ``--retry-failed``: cells whose latest row is failed, oom or a repeated-failure skip are measured again
    retry_failed: bool = False


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


def _load_for_resume(resume: Path, suite_path: Optional[str]) -> tuple[Suite, Optional[str], dict[str, Any],
                                                                      Optional[str]]:
    """(suite, suite path, manifest, why the manifest was rebuilt or None) of a run directory to resume."""
    if not resume.is_dir():
        raise UserError(f"--resume {resume}: not a directory; expected a run directory made by attnbench run")
    try:
        manifest, problem = read_manifest(resume), None
    except FileNotFoundError:
        manifest, problem = None, f"no {MANIFEST_FILE} there"
    except UserError as e:
        manifest, problem = None, e.message
    if manifest is None or not isinstance(manifest.get("suite"), dict) or "name" not in manifest["suite"]:
        return _rebuild_manifest(resume, suite_path, problem or f"{resume / MANIFEST_FILE}: has no suite")
    if suite_path is None:
        suite = suite_from_dict(manifest["suite"], source=f"{resume / MANIFEST_FILE} (suite)")
        return suite, manifest.get("suite_path"), manifest, None
    suite = load_suite(suite_path)
    if suite.name != manifest["suite"]["name"]:
        raise UserError(f"--resume {resume}: that run is of suite {manifest['suite']['name']!r}, "
                        f"but {suite_path} is suite {suite.name!r}")
    return suite, suite_path, manifest, None


def _rebuild_manifest(resume: Path, suite_path: Optional[str], problem: str) -> tuple[Suite, Optional[str],
                                                                                       dict[str, Any], str]:
    """A manifest rebuilt from the rows and the suite file, when the rows say which suite the run was of."""
    rows = read_rows(resume)
    if not rows:
        raise UserError(f"--resume {resume}: {problem}; expected a directory made by attnbench run")
    names = sorted({str(r.get("suite")) for r in rows if r.get("suite")})
    if suite_path is None:
        raise UserError(f"--resume {resume}: {problem}; give the suite file to rebuild it from the {len(rows)} "
                        f"rows: attnbench run SUITE --resume {resume}  (the rows are of suite {', '.join(names)})")
    suite = load_suite(suite_path)
    if names != [suite.name]:
        raise UserError(f"--resume {resume}: the rows are of suite {', '.join(names) or '(none)'}, "
                        f"but {suite_path} is suite {suite.name!r}")
    started = min((str(r["started_at"]) for r in rows if r.get("started_at")), default=None)
    manifest = {"schema_version": SCHEMA_VERSION, "run_id": resume.name, "suite": suite.to_dict(),
                "suite_path": suite_path, "started_at": started, "ended_at": None, "argv": None,
                "options": {"only": None, "device": None, "isolate": None}, "cells": None, "counts": None,
                "interrupted": None, "resumes": [],
                "rebuilt_from_rows": {"reason": problem, "rows": len(rows)}}
    return suite, suite_path, manifest, problem


def _check_size(suite: Suite, max_cells: Optional[int]) -> None:
    """Refuse a suite with more cells than ``max_cells`` before expanding it (counting is instant)."""
    limit = MAX_CELLS if max_cells is None else max_cells
    n = count_cells(suite)
    if n > limit:
        raise UserError(f"suite {suite.name!r} expands to {n:,} cells, more than the limit of {limit:,}; narrow "
                        f"its axes or, if you mean it, raise the limit with --max-cells {n}")


def plan(suite_path: Optional[str], *, out: Optional[str] = None, only: Optional[str] = None,
         resume: Optional[str] = None, device: Optional[str] = None,
         cuda_available: Optional[bool] = None, max_cells: Optional[int] = None,
         retry_failed: bool = False) -> Plan:
    """Load the suite (or the run to resume), expand it on this machine and subtract the cells already done.

    Args:
        suite_path: the suite YAML; optional with ``resume`` (the manifest holds the resolved suite).
        out: the run directory (default ``runs/<suite>-<YYYYmmdd-HHMMSS>``); must not hold results yet.
        only: a ``--only`` filter (:func:`attnbench.suite.cells.parse_only`); on resume, the original run's by default.
        resume: a run directory to complete.
        device: replaces the suite's device axis; on resume, the original run's by default.
        cuda_available: defaults to ``torch.cuda.is_available()``.
        max_cells: refuse suites with more cells (before excludes) than this; default :data:`MAX_CELLS`.
        retry_failed: with ``resume``, measure again the cells whose latest row is ``failed``, ``oom`` or a
            repeated-failure skip (:func:`attnbench.engine.failure_policy.retryable_ids`).
    """
    if retry_failed and not resume:
        raise UserError("--retry-failed measures the failed cells of a run again; give the run with --resume RUN_DIR")
    if resume and out:
        raise UserError("--resume and --out both name a run directory; give one of them")
    done: set[str] = set()
    manifest, rebuilt = None, None
    if resume:
        run_dir = Path(resume)
        suite, suite_path, manifest, rebuilt = _load_for_resume(run_dir, suite_path)
        options = manifest.get("options", {})
        only = only if only is not None else options.get("only")
        device = device if device is not None else options.get("device")
        done = done_ids(read_rows(run_dir), retry_failed)
    elif suite_path is None:
        raise UserError("give a SUITE file to run (or --resume RUN_DIR)")
    else:
        # the structure first, torch-free: a broken file, a typo in --only, a used --out or a runaway grid is
        # reported at once; the attention names and configs are checked below, against the registry (torch)
        suite = load_suite(suite_path, check_attentions=False)
        run_dir = Path(out) if out else _default_run_dir(suite)
        refuse_used(run_dir)
    selection = parse_only(only) if only else None
    _check_size(suite, max_cells)
    if not resume:
        suite = load_suite(suite_path)
    _check_accuracy_data(suite, suite_path or str(run_dir / MANIFEST_FILE))
    import torch  # after the suite is loaded and checked: a broken suite is reported without waiting for torch

    from ..suite.probe import Probe

    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    probe, rejected = Probe(), {}

    def check(cell: Cell) -> Optional[str]:
        reason = probe(cell)
        if reason is not None and ":" not in cell.attention:
            rejected[cell.cell_id] = reason
        return reason

    expansion = expand(suite, cuda_available=cuda_available, device=device, probe=check)
    # from the whole suite: a --only that leaves the baseline out still pairs each cell with it
    baselines = expansion.baselines(suite.baseline) if "latency" in suite.metrics else {}
    if selection is not None:
        expansion = expansion.select(selection)
        if not expansion.cells and not expansion.skipped:
            raise UserError(f"--only {only!r} matches none of the suite's cells; `attnbench run {suite_path or ''} "
                            "--dry-run` lists them")
    if not resume:  # a run already made keeps its skipped rows
        _refuse_rejected(suite_path or suite.name, [(c, r) for c, r in expansion.skipped if c.cell_id in rejected])
    to_run = [c for c in expansion.cells if c.cell_id not in done]
    to_skip = [(c, r) for c, r in expansion.skipped if c.cell_id not in done]
    from .cell_budget import default_timeout, expected_work, suite_timeout

    fixed, limit = suite_timeout(dict(suite.settings), list(suite.metrics))
    timeouts = {c.cell_id: limit if fixed else default_timeout(c, probe.macs.get(c.cell_id)) for c in to_run}
    work = {c.cell_id: expected_work(c, probe.macs.get(c.cell_id)) for c in to_run + list(baselines.values())}
    return Plan(suite, suite_path, run_dir, expansion, to_run, to_skip, done=len(done), resume=bool(resume),
                options={"only": only, "device": device}, manifest=manifest, rebuilt=rebuilt,
                baselines=baselines, timeouts=timeouts, work=work, retry_failed=retry_failed)


def _check_accuracy_data(suite: Suite, source: str) -> None:
    """A suite that trains reads an image tree: its root, split folders and subset classes are checked now (by
    ``--dry-run`` too), so a wrong ``subset`` is one line before any job starts rather than a failure per cell."""
    if "accuracy" not in suite.metrics:
        return
    from ..accuracy.data import DataError, check_data
    from ..accuracy.job import AccuracySettings

    settings = AccuracySettings.from_dict(suite.settings.get("accuracy"))
    if settings.synthetic:
        return
    try:
        check_data(settings.data_root, settings.subset)
    except DataError as e:
        raise UserError(f"{source}: settings.accuracy: {e}") from None


def suite_budget_s(suite: Suite) -> Optional[float]:
    """``settings.latency.suite_budget_s`` of a suite that measures latency, else None."""
    if "latency" not in suite.metrics:
        return None
    value = (suite.settings.get("latency") or {}).get("suite_budget_s")
    return float(value) if value is not None else None


def _suite_budget(p: Plan):
    """The :class:`~attnbench.engine.budget.SuiteBudget` of a run whose suite sets one, over the cells still to run."""
    from .budget import SuiteBudget

    total = suite_budget_s(p.suite)
    if total is None:
        return None
    latency = p.suite.settings.get("latency") or {}
    from ..metrics.latency import DEFAULTS

    def work(cell: Cell) -> Optional[float]:
        own = p.work.get(cell.cell_id)
        base = p.baselines.get(cell.cell_id)
        if base is None or own is None:
            return own
        other = p.work.get(base.cell_id)
        return own + other if other is not None else None

    return SuiteBudget(total, {c.cell_id: work(c) for c in p.to_run},
                       max_s=float(latency.get("max_time_s", DEFAULTS["max_time_s"])))


def _refuse_rejected(source: str, cells: list[tuple[Cell, str]]) -> None:
    """Cells a built-in attention cannot take (its config and the grid disagree) are suite errors, one per cell.

    Built-in attentions state their constraints exactly (config validation and ``cost(H, W)``), so such a cell is a
    mistake in the suite; a third-party attention's cell is only skipped (its ``cost`` may be missing or loose).
    """
    if not cells:
        return
    lines = [f"{source}: cell {c.describe()} ({c.cell_id}): {r}" for c, r in cells[:10]]
    if len(cells) > 10:
        lines.append(f"{source}: ... and {len(cells) - 10} more such cells")
    fix = "the resolution" if cells[0][0].kind == "model" else _config_fix([r for _, r in cells])
    lines.append(f"{source}: fix {fix} or leave these cells out with an exclude entry")
    raise UserError("\n".join(lines))


def _config_fix(reasons: list[str]) -> str:
    """What to change in the config: ``auto_pad`` only where a reason is a grid that does not fit (a ``topk`` out
    of range is not helped by padding)."""
    grid = [r for r in reasons if "auto_pad" in r]
    if len(grid) == len(reasons):
        return "the config (e.g. auto_pad: true)"
    if grid:
        return "the config values named above (auto_pad: true for the grids that do not fit)"
    return "the config values named above"


def cell_timeout(suite: Suite) -> Optional[float]:
    """The suite's longest per-cell time limit in seconds: ``settings.timeout_s`` (null: none), else none for a
    suite with the ``accuracy`` metric (training a model takes hours), else :data:`DEFAULT_TIMEOUT_S` (the
    ceiling; each cell's own limit follows from its expected cost, :func:`attnbench.engine.cell_budget.default_timeout`)."""
    from .cell_budget import suite_timeout

    fixed, limit = suite_timeout(dict(suite.settings), list(suite.metrics))
    return limit if fixed else DEFAULT_TIMEOUT_S


def _executors(p: Plan, isolate: Optional[bool]):
    """cell -> the executor measuring it: every cell in a child (``isolate=True``), none (``False``), or by default
    (``None``) only cells of attentions given by dotted path, whose third-party code could take the sweep down."""
    from .execute import CellRunner, IsolatedRunner

    cell_runner = CellRunner(p.suite.metrics, dict(p.suite.settings), p.suite.seed,  # imports metrics once
                             timeout_s=cell_timeout(p.suite))
    isolated = IsolatedRunner(cell_runner)

    def executor_for(cell: Cell):
        if isolate is not None:
            return isolated if isolate else cell_runner
        return isolated if ":" in cell.attention else cell_runner

    executor_for.in_process = cell_runner
    return executor_for


def _point_jobs_at(run_dir: Path):
    """Metrics that keep work files (accuracy checkpoints) keep them in this run directory, also in child
    processes: ``$ATTNBENCH_RUN_DIR`` for the run; returns the function that restores the environment."""
    old = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())

    def restore() -> None:
        if old is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = old

    return restore


def run(p: Plan, *, isolate: Optional[bool] = None, argv: Optional[list[str]] = None, progress: bool = True,
        stream: Optional[TextIO] = None) -> Summary:
    """Measure the plan's cells, appending one row per cell; Ctrl-C/SIGTERM stop cleanly (``interrupted``).

    The run directory is locked for the whole run (:mod:`attnbench.engine.run_lock`). A file-system error (a full disk, a
    read-only location) ends the run with one :class:`UserError` line naming the path; the manifest then records
    the end state (``ended_at``, ``counts``, ``error``) when it can still be written.

    Args:
        isolate: True measures every cell in a child process, False none; None (the default) isolates the cells of
            attentions given by dotted path (``package.module:Class``).
    """
    from .failure_policy import REPEAT_STAGE, RepeatedFailures
    from .progress import Progress

    executor_for = _executors(p, isolate)
    repeats = RepeatedFailures.for_settings(dict(p.suite.settings))
    default_limit = cell_timeout(p.suite)
    lock = open_run_dir(p)
    restore_env = _point_jobs_at(p.run_dir)
    run_id, t0 = p.run_dir.name, time.perf_counter()
    ran, interrupted, problems, failure = 0, False, [], None
    manifest: Optional[dict[str, Any]] = None
    restore_sigterm = catch_sigterm()
    bar = Progress(len(p.to_run), stream=stream, enabled=progress,
                   work=[p.work.get(c.cell_id) for c in p.to_run],
                   isolated=[executor_for(c) is not executor_for.in_process for c in p.to_run])
    try:
        if p.rebuilt:
            quarantine_manifest(p.run_dir)  # kept as manifest.damaged.json
        manifest = start_manifest(p, list(argv if argv is not None else sys.argv),
                                   {True: True, False: False, None: "dotted-path attentions"}[isolate])
        write_manifest(p.run_dir, manifest)
        with ResultsWriter(p.run_dir) as writer:
            for cell, reason in p.to_skip:
                writer.append(make_row(cell, run_id, status="skipped", error=reason, error_stage="probe",
                                       started_at=now_iso(), duration_s=0.0))
            budget = _suite_budget(p)
            groups = LatencyGroups(p.to_run, p.baselines, list(p.suite.metrics), dict(p.suite.settings),
                                   lambda c: executor_for(c) is executor_for.in_process)
            for cell in p.to_run:
                stop = repeats.reason(cell.label)
                if stop is not None:  # its attention already failed the same way twice: say so, do not measure
                    writer.append(make_row(cell, run_id, status="skipped", error=stop, error_stage=REPEAT_STAGE,
                                           started_at=now_iso(), duration_s=0.0))
                    if not any(what == cell.label for what, _, _ in problems):
                        problems.append((cell.label, "skipped", stop))
                    bar.finish(cell, "skipped", stop, 0.0)
                    if budget is not None:
                        budget.spend(cell.cell_id, 0.0)
                    continue
                bar.start(cell)
                started, c0, load_before = now_iso(), time.perf_counter(), machine_load.sample()
                group = groups.take(cell, lambda c: repeats.reason(c.label) is not None)
                outcome = _measure(p, executor_for(cell), cell, group, budget, default_limit)
                if group and outcome.status != "ok" and outcome.error_stage == "latency":
                    groups.give_up()  # maybe a sibling's fault: this cell alone, and no more groups
                    group = None
                    outcome = _measure(p, executor_for(cell), cell, None, budget, default_limit)
                duration = time.perf_counter() - c0
                if budget is not None:
                    _spend(budget, cell, group, outcome.columns)
                columns = {**outcome.columns, **machine_load.cell_columns(load_before, machine_load.sample())}
                writer.append(make_row(cell, run_id, status=outcome.status, error=outcome.error,
                                       error_stage=outcome.error_stage, started_at=started, duration_s=duration,
                                       columns=columns))
                ran += 1
                if outcome.status != "ok":
                    problems.append((cell.describe(), outcome.status, outcome.error or ""))
                repeats.record(cell.label, outcome.status, outcome.error, outcome.error_stage)
                bar.finish(cell, outcome.status, outcome.error, duration)
    except KeyboardInterrupt:
        interrupted = True
    except OSError as e:
        failure = e
    finally:
        bar.close()
        restore_sigterm()
        try:
            counts = finish_manifest(p, manifest, interrupted, failure)
        finally:
            restore_env()
            _remove_empty(p.run_dir / CELLS_DIR)
            lock.release()
    if failure is not None:
        raise UserError(f"{os_error_text(failure)}; the run stopped ({ran} cell(s) measured now, all saved); "
                        f"fix that, then finish it with: attnbench run --resume {p.run_dir}")
    return Summary(p.run_dir, counts, ran, interrupted, time.perf_counter() - t0, problems)


def _measure(p: Plan, executor: Any, cell: Cell, group: Optional[list[Cell]], budget: Any,
             default_limit: Optional[float]):
    """One cell's outcome; with ``group`` (:mod:`attnbench.engine.shared_baseline`) its latency stage also measures those
    cells, with their summed time limits and budget shares."""
    ids = [cell.cell_id] + [c.cell_id for c in group or []]
    allowance = budget.allowance_for(ids) if budget is not None else None
    limit = group_timeout([p.timeouts.get(i, default_limit) for i in ids])
    extra = {"group": group} if group else {}
    return executor.measure(cell, p.baselines.get(cell.cell_id), timeout_s=limit, latency_budget_s=allowance,
                            **extra)


def _spend(budget: Any, cell: Cell, group: Optional[list[Cell]], columns: dict[str, Any]) -> None:
    """Take the cell's sampling time off the suite budget: a group's whole time at its first cell (whose siblings
    then spend nothing when their columns are handed over), else the cell's own."""
    if group:
        budget.spend_for([cell.cell_id] + [c.cell_id for c in group], columns.get("latency_group_spent_s") or 0.0)
    elif "latency_group_spent_s" in columns:
        budget.spend(cell.cell_id, 0.0)
    else:
        budget.spend(cell.cell_id, columns.get("latency_spent_s") or 0.0)


def _remove_empty(folder: Path) -> None:
    """Remove the isolated children's outcome folder once the run is over, if nothing was left in it."""
    try:
        folder.rmdir()
    except OSError:
        pass


if __name__ == "__main__":
    from .parent_watch import die_with_parent

    die_with_parent()  # before importing torch: a parent killed meanwhile takes this child with it
    from .execute import child_main

    sys.exit(child_main())
