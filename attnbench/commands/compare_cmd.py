"""``attnbench compare``: a per-cell ratio table of two runs; exit 1 on a regression."""
from __future__ import annotations

import sys

import click

from ..hints import check_run_dirs

__all__ = ["command"]


@click.command("compare")
@click.argument("base_run", metavar="BASE_RUN")
@click.argument("new_run", metavar="NEW_RUN")
@click.option("--threshold", default=20.0, show_default=True, type=click.FloatRange(min=0),
              help="Latency slowdown (percent) that fails when it is also statistically clear (the bootstrap "
                   "interval of the ratio wholly above 1 + threshold and Mann-Whitney p < 0.01 on the raw "
                   "samples). Two processes running the same code on one CPU differ by up to ~12%, which no "
                   "within-run interval sees; below ~15% compare several runs (docs/report.md).")
@click.option("--format", "fmt", type=click.Choice(["text", "md"]), default="text", show_default=True,
              help="Table format.")
@click.option("--changed-only", is_flag=True, help="Hide the rows whose verdict is 'same'.")
def command(base_run: str, new_run: str, threshold: float, fmt: str, changed_only: bool) -> None:
    """Compare NEW_RUN against BASE_RUN cell by cell.

    Exit 1 when params or a FLOP count changed (either way), a latency got slower by more than --threshold and
    the slowdown is statistically clear, or an ok cell now fails; 0 otherwise; 2 on bad input, including two runs
    with no cell in common.
    """
    check_run_dirs((base_run, new_run))  # before pandas is imported
    from attnbench.compare import compare_runs, render

    comparison = compare_runs(base_run, new_run, threshold / 100)
    click.echo(render(comparison, fmt, changed_only), nl=False)
    sys.exit(comparison.exit_code)
