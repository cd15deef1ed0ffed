"""``attnbench report``: render results.csv, summary.md, figures and index.html from run directories."""
from __future__ import annotations

import click

from ..core.hints import check_run_dirs

__all__ = ["command"]


@click.command("report")
@click.argument("run_dirs", nargs=-1, metavar="[RUN_DIR]...")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output directory [default: reports/<suite name>].")
@click.option("--runs-root", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where to look for the latest run when no RUN_DIR is given.")
@click.option("--no-figures", is_flag=True, help="Write the tables and the page only (faster).")
def command(run_dirs: tuple[str, ...], out_dir: str | None, runs_root: str, no_figures: bool) -> None:
    """Report on RUN_DIR(s); with none, the most recently modified run under runs/ (the one it picked is printed).

    Writes OUT/results.csv, summary.md, figures/*.png|svg and index.html; OUT defaults to reports/<suite name>,
    so reporting a new run of a suite replaces that suite's previous report.
    """
    check_run_dirs(run_dirs)  # before pandas and matplotlib are imported
    from attnbench.report import build_report, resolve_run_dirs

    dirs = resolve_run_dirs(run_dirs, runs_root)
    newest = "" if run_dirs else f" (the most recently modified run under {runs_root}/)"
    click.echo(f"report of {', '.join(map(str, dirs))}{newest}")
    out = build_report(dirs, out_dir, figures=not no_figures)
    for name in ("results.csv", "summary.md", "index.html"):
        click.echo(f"  {out / name}")
    if not no_figures:
        click.echo(f"  {out / 'figures'}/")
