"""The ``attnbench`` command line: thin wrappers that parse options and call plain functions.

Each command lives in ``attnbench/commands/<name>.py`` as a click command called ``command``; this group imports
it only when it is invoked, so ``attnbench --help`` stays fast and one broken command cannot break the others.
"""
from __future__ import annotations

import importlib
import warnings

import click

from . import __version__
from .core.errors import UserError, os_error_text
from .core.hints import closest

#: command name -> module under attnbench.commands
COMMANDS = {
    "list": "list_cmd",
    "run": "run_cmd",
    "report": "report_cmd",
    "compare": "compare_cmd",
    "ci": "ci_cmd",
    "status": "status_cmd",
    "viz": "viz_cmd",
}

_HELP = {
    "list": "List the registered attentions with their config fields and defaults.",
    "run": "Run a YAML suite: FLOPs, params, latency, peak memory (and accuracy) per cell.",
    "report": "Render results.csv, summary.md, figures and index.html from run directories.",
    "compare": "Compare two runs cell by cell; exit 1 on a regression.",
    "ci": "CI benchmark gate against a committed baseline, or PR vs base (--base REF); exit 1 on a regression.",
    "status": "Show the batch jobs of a run (--executor local|slurm): state, scheduler id, cells, log.",
    "viz": "Draw routing, sampling points, agent maps, query attention and ERFs over real images.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"attnbench.commands.{COMMANDS[name]}")
        return module.command

    def resolve_command(self, ctx: click.Context, args: list[str]):
        """An unknown command name fails with the nearest one and the list (click alone cannot suggest: the
        commands are not loaded until one is invoked)."""
        name = args[0] if args else ""
        if name and name not in COMMANDS and not name.startswith("-") and not ctx.resilient_parsing:
            near = closest(name, COMMANDS)
            hint = f" Did you mean {near!r}?" if near else ""
            ctx.fail(f"No such command {name!r}.{hint} Commands: {', '.join(COMMANDS)}.")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context):
        """Run the command; warnings become one ``warning:`` line each, and a file-system error one line naming the
        path (exit 2) instead of a traceback."""
        warnings.showwarning = _one_line_warning
        try:
            return super().invoke(ctx)
        except OSError as e:
            raise UserError(os_error_text(e)) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # list help from the static table so --help does not import torch
        with formatter.section("Commands"):
            formatter.write_dl([(n, _HELP[n]) for n in COMMANDS])


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {message}", err=True)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="attnbench")
def main() -> None:
    """attnbench: which attention is faster, leaner and more accurate at your resolution, and why."""


if __name__ == "__main__":  # python -m attnbench.cli
    main()
