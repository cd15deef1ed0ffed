"""``attnbench list``: the registered attentions, their config fields, types and defaults."""
from __future__ import annotations

import importlib

import click

from ..core.errors import UserError
from ..core.hints import pattern_hint

__all__ = ["command", "describe_attentions"]


def describe_attentions(pattern: str | None = None) -> list[tuple[str, str, list[tuple[str, str, object]]]]:
    """(name, first docstring line, [(field, type, default), ...]) for each registered attention.

    Raises:
        UserError: ``pattern`` matches no registered name (with the nearest name and the registered ones).
    """
    import attentions  # imports torch: only once the arguments are known to be fine
    from attentions.config import field_table

    names = attentions.available(pattern)
    if pattern and not names:
        every = attentions.available()
        raise UserError(f"no registered attention matches {pattern!r}{pattern_hint(pattern, every)} "
                        f"(registered: {', '.join(every)}; a pattern is a shell glob, e.g. 'd*')")
    rows = []
    for name in names:
        cls = attentions.resolve(name)
        doc = (importlib.import_module(cls.__module__).__doc__ or cls.__doc__ or "").strip()
        summary = doc.splitlines()[0] if doc else ""
        config_cls = getattr(cls, "Config", None)
        fields = field_table(config_cls) if config_cls is not None else []
        rows.append((name, summary, fields))
    return rows


@click.command("list")
@click.argument("pattern", required=False)
def command(pattern: str | None) -> None:
    """List the registered attentions (optionally those matching the shell glob PATTERN, e.g. 'd*').

    A PATTERN that matches none exits 2 with the nearest name.
    """
    for name, summary, fields in describe_attentions(pattern):
        click.secho(name, bold=True, nl=False)
        click.echo(f"  {summary}")
        width = max((len(f) for f, _, _ in fields), default=0)
        type_width = max((len(t) for _, t, _ in fields), default=0)
        for field, typ, default in fields:
            click.echo(f"    {field:<{width}}  {typ:<{type_width}}  default {default!r}")
