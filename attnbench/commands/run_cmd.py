"""``attnbench run SUITE``: expand a suite into cells and measure them into a run directory."""
from __future__ import annotations

import os
import sys
from typing import Optional

import click

from ..core.errors import UserError
from ..engine.executors.cli import _chosen, _overrides, executor_options, run_if_executor
from ..core.hints import check_run_dir, suggest_suite, suggestion
from ..engine.progress import format_seconds
from ..core.results import FAILED_STATUSES, MANIFEST_FILE, RESULTS_FILE, STATUSES
from ..suite.schema import SuiteError

_ONLY_HELP = ("Run only matching cells: comma-separated key=pattern terms (keys: attention, label, resolution, "
              "height, width, tokens, batch, dtype, device, pass, mode, cell_id; shell globs; '|' separates "
              "alternatives); a bare term is a label glob. E.g. 'attention=dbra,pass=forward' or 'dbra-topk*'.")


def print_plan(p, echo=click.echo) -> None:
    """The cells a run would measure, those skipped with the reason, and exclude entries that matched nothing."""
    s = p.suite
    head = f"suite {s.name}: {len(p.to_run)} cells to run, {len(p.to_skip)} skipped, {p.expansion.excluded} excluded"
    if p.resume:
        head += f", {p.done} already done in {p.run_dir}"
    echo(head)
    for i, cell in enumerate(p.to_run, 1):
        echo(f"  {i:>4}  {cell.cell_id}  {cell.describe()}")
    if p.to_skip:
        echo("skipped (not run):")
        for cell, reason in p.to_skip:
            echo(f"        {cell.cell_id}  {cell.describe()}: {reason}")
    for i in p.expansion.unused_excludes:
        echo(f"warning: exclude[{i}] {s.exclude[i]} matches no cell", err=True)


def print_summary(summary, echo=click.echo) -> None:
    counts = summary.counts
    parts = ", ".join(f"{counts.get(k, 0)} {k}" for k in STATUSES)
    echo(f"\n{parts} ({sum(counts.values())} cells in the run directory; {summary.ran} measured now "
         f"in {format_seconds(summary.elapsed_s)})")
    for what, status, error in summary.problems[:10]:
        echo(f"  {status}: {what}: {error}")
    if len(summary.problems) > 10:
        echo(f"  ... and {len(summary.problems) - 10} more (see {RESULTS_FILE})")
    echo(f"run directory: {summary.run_dir}")
    echo(f"next: attnbench report {summary.run_dir}")


#: exit code of a run that finished with failed (or out-of-memory) cells, unless --allow-failures; bad input is 2,
#: an interrupted run 130
EXIT_CELLS_FAILED = 3


def exit_if_cells_failed(counts: dict, run_dir, allow: bool) -> None:
    """Exit with :data:`EXIT_CELLS_FAILED` when the run directory holds failed or out-of-memory cells (so that
    ``attnbench run S && attnbench report R`` stops there), unless ``allow``."""
    bad = sum(counts.get(k, 0) for k in FAILED_STATUSES)
    if bad and not allow:
        click.echo(f"error: {bad} cell(s) failed (exit {EXIT_CELLS_FAILED}); the report shows them as failed. "
                   f"Measure them again after a fix with: attnbench run --resume {run_dir} --retry-failed "
                   "(--allow-failures exits 0)", err=True)
        sys.exit(EXIT_CELLS_FAILED)


def _check_suite_path(suite: Optional[str]) -> None:
    """A SUITE that is not there fails at once, with the nearest suite file (`resolution_swep.yaml`, or a bare
    `resolution_sweep`, -> `suites/resolution_sweep.yaml`)."""
    if suite is not None and os.path.isdir(suite):
        if os.path.exists(os.path.join(suite, MANIFEST_FILE)):
            raise SuiteError(f"{suite}: is a directory, a run directory; to complete it: attnbench run --resume "
                             f"{suite}")
        raise SuiteError(f"{suite}: is a directory; expected a suite YAML file (e.g. suites/smoke.yaml)")
    if suite is None or os.path.lexists(suite):
        return  # a file that exists but cannot be read is reported by load_suite, naming the reason
    hint = suggestion(suggest_suite(suite))
    raise SuiteError(f"{suite}: cannot read suite file: No such file or directory{hint}")


def _check_executor_flags(executor: dict, resume: Optional[str]) -> None:
    """Resource flags without --executor, and a malformed --sbatch, before anything is loaded (a resumed run may
    take its executor from its manifest, so only --sbatch is checked then)."""
    _overrides(executor)
    if not resume and not executor.get("x_executor") and any(v for k, v in executor.items() if k != "x_executor"):
        raise UserError("the executor options (--partition, --time, --sbatch, ...) need --executor local|slurm")


@click.command("run")
@click.argument("suite", required=False, type=click.Path())  # a directory: one line (_check_suite_path)
@click.option("--out", "out", type=click.Path(file_okay=False), help="Run directory (default runs/<suite>-<time>).")
@click.option("--only", help=_ONLY_HELP)
@click.option("--dry-run", is_flag=True, help="List the cells (and the skipped ones, with the reason); run nothing.")
@click.option("--resume", "resume", type=click.Path(file_okay=False),
              help="Complete RUN_DIR: run only the cells that have no row in its results.jsonl yet.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "cuda_if_available"]),
              help="Replace the suite's device axis.")
@click.option("--isolate/--no-isolate", default=None,
              help="Measure every cell in a fresh subprocess (a crash or hang fails only that cell) / none. "
                   "Default: only attentions given by dotted path (package.module:Class) run isolated.")
@click.option("--max-cells", type=click.IntRange(min=1), default=None,
              help="Allow a suite of more cells than the default limit (10000).")
@click.option("--no-progress", is_flag=True, help="No progress bar or per-cell lines on stderr.")
@click.option("--retry-failed", is_flag=True,
              help="With --resume: measure again the cells whose row is failed, oom or skipped after repeated "
                   "failures.")
@click.option("--allow-failures", is_flag=True,
              help=f"Exit 0 even when cells failed (default: exit {EXIT_CELLS_FAILED}).")
@executor_options
def command(suite: Optional[str], out: Optional[str], only: Optional[str], dry_run: bool, resume: Optional[str],
            device: Optional[str], isolate: Optional[bool], max_cells: Optional[int], no_progress: bool,
            retry_failed: bool, allow_failures: bool, **executor: object) -> None:
    """Run the YAML suite SUITE (optional with --resume): params, FLOPs, latency, memory per cell.

    Rows go to RUN_DIR/results.jsonl as cells finish; RUN_DIR/manifest.json records the environment. Exit codes:
    0 all cells measured (or skipped), 2 bad input, 3 cells failed (see --allow-failures), 130 interrupted.
    """
    _check_suite_path(suite)
    if resume:
        check_run_dir(resume, "--resume")
    _check_executor_flags(executor, resume)
    from ..engine import runner  # torch only after the checks above (and the suite structure, in runner.plan)
    from ..engine.lifecycle import final_counts

    p = runner.plan(suite, out=out, only=only, resume=resume, device=device, max_cells=max_cells,
                    retry_failed=retry_failed)
    if retry_failed and _chosen(p, executor.get("x_executor")) != "inline":
        raise UserError("--retry-failed measures in this process; it does not apply to runs of --executor "
                        "local|slurm (their jobs keep a cell's first row)")
    if dry_run:
        print_plan(p)
        return
    for i in p.expansion.unused_excludes:
        click.echo(f"warning: exclude[{i}] {p.suite.exclude[i]} matches no cell", err=True)
    if run_if_executor(p, executor, isolate=isolate, progress=not no_progress, print_summary=print_summary):
        exit_if_cells_failed(final_counts(p.run_dir), p.run_dir, allow_failures)
        return
    summary = runner.run(p, isolate=isolate, argv=["attnbench", *sys.argv[1:]], progress=not no_progress)
    if summary.interrupted:
        click.echo(f"\ninterrupted: {sum(summary.counts.values())} cells are saved in "
                   f"{summary.run_dir / RESULTS_FILE}; finish the run with:\n"
                   f"  attnbench run --resume {summary.run_dir}", err=True)
        sys.exit(130)
    print_summary(summary)
    exit_if_cells_failed(summary.counts, summary.run_dir, allow_failures)
