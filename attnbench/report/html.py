"""``index.html``: the summary's tables and the figures on one page that reads offline.

The page has no script and no remote resource: styles are inline and figures are the report's own SVG files,
referenced by relative path (``figures/<name>.svg``), so the directory can be copied or zipped as a whole.
"""
from __future__ import annotations

import re

import jinja2
import markupsafe

from .markdown import legend

__all__ = ["render_html"]

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("attnbench.report", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _code(text: str) -> markupsafe.Markup:
    """Escape, then turn Markdown `code` spans and **bold** (shared with summary.md) into <code> and <b>."""
    escaped = str(markupsafe.escape(text))
    escaped = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", escaped)
    return markupsafe.Markup(re.sub(r"`([^`]*)`", r"<code>\1</code>", escaped))


_ENV.filters["code"] = _code


def _cell(text: str) -> markupsafe.Markup:
    """A value and its bracketed ratio on two lines (``8.00 [6.00–10.0]`` / ``(0.80× [0.74–0.87])``), so five
    latency columns fit the page."""
    value, sep, ratio = str(text).partition(" (")
    if not sep or not ratio.endswith(")"):
        return markupsafe.Markup(markupsafe.escape(text))
    return markupsafe.Markup(f'{markupsafe.escape(value)}<br><span class="ratio">({markupsafe.escape(ratio)}</span>')


_ENV.filters["cell"] = _cell


def render_html(report) -> str:
    """The HTML text of a :class:`attnbench.report.build.Report`."""
    return _ENV.get_template("index.html").render(report=report, legend=legend())
