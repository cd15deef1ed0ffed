"""``attnbench list``: the registered attentions, their config fields, types and defaults."""
from __future__ import annotations

import importlib

import click

import attentions
from attentions.config import field_table


def describe_attentions(pattern: str | None = None) -> list[tuple[str, str, list[tuple[str, str, object]]]]:
    """(name, first docstring line, [(field, type, default), ...]) for each registered attention."""
    rows = []
    for name in attentions.available(pattern):
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
    """List the registered attentions (optionally those matching PATTERN, e.g. 'd*')."""
    for name, summary, fields in describe_attentions(pattern):
        click.secho(name, bold=True, nl=False)
        click.echo(f"  {summary}")
        width = max((len(f) for f, _, _ in fields), default=0)
        type_width = max((len(t) for _, t, _ in fields), default=0)
        for field, typ, default in fields:
            click.echo(f"    {field:<{width}}  {typ:<{type_width}}  default {default!r}")
