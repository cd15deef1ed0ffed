"""``attnbench compare``: a per-cell ratio table of two runs; exit 1 on a regression."""
from __future__ import annotations

import sys

import click

from ..core.hints import check_run_dirs

__all__ = ["command"]


@click.command("compare")
@click.argument("base_run", metavar="BASE_RUN")
@click.argument("new_run", metavar="NEW_RUN")
@click.option("--threshold", default=20.0, show_default=True, type=click.FloatRange(min=0),
              help="Latency slowdown (percent) that fails when it is also statistically clear: the 95% interval "
                   "of the change (the two runs' intervals combined) wholly above 1 + threshold (docs/report.md).")
@click.option("--absolute", is_flag=True,
              help="Judge latencies on absolute medians (plus Mann-Whitney p < 0.01 on the clean samples) instead "
                   "of each cell's ratio to the suite's baseline measured in the same run (the default where both "
                   "runs have one). Absolute medians of unchanged code move by up to ~12% between processes.")
@click.option("--format", "fmt", type=click.Choice(["text", "md"]), default="text", show_default=True,
              help="Table format.")
@click.option("--changed-only", is_flag=True, help="Hide the rows whose verdict is 'same'.")
def command(base_run: str, new_run: str, threshold: float, absolute: bool, fmt: str, changed_only: bool) -> None:
    """Compare NEW_RUN against BASE_RUN cell by cell.

    Exit 1 when params or a FLOP count changed (either way), a latency got slower by more than --threshold and
    the slowdown is statistically clear (by default judged on each cell's ratio to the suite's baseline, measured
    interleaved in each run), or an ok cell now fails; 0 otherwise; 2 on bad input, including two runs with no
    cell in common. Says when either run was measured under load.
    """
    check_run_dirs((base_run, new_run))  # before pandas is imported
    from attnbench.report.compare import compare_runs, render

    comparison = compare_runs(base_run, new_run, threshold / 100, "absolute" if absolute else "paired")
    click.echo(render(comparison, fmt, changed_only), nl=False)
    sys.exit(comparison.exit_code)
