"""``summary.md``: the environment, then one section per metric, failures and links to the figures."""
from __future__ import annotations

from .tables import NOISY_MARK, Table

__all__ = ["md_table", "render_summary"]


def md_table(table: Table) -> str:
    """A GitHub pipe table; ``|`` inside a cell is escaped."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    align = "--:" if table.numeric else "---"
    out = [line(table.header), "|" + "|".join(["---"] + [align] * (len(table.header) - 1)) + "|"]
    out += [line(row) for row in table.rows]
    return "\n".join(out)


def render_summary(report) -> str:
    """The Markdown text of a :class:`attnbench.report.build.Report`."""
    parts = [f"# attnbench report: {report.title}", "", md_table(report.environment), "",
             md_table(report.attentions), ""]
    parts += [report.baseline_note, "", f"Legend: {legend()}", ""]
    for section in report.sections:
        parts += [f"## {section.title}", "", section.description, ""]
        for table in section.tables:
            parts += [f"*{table.caption}*", "", md_table(table), ""]
        if section.key == "macs_fvcore" and report.uncounted:
            parts += ["Ops no counter counted: " + "; ".join(f"{k}: {v}" for k, v in report.uncounted.items()), ""]
    if report.failures is not None:
        parts += ["## Failures", "", md_table(report.failures), ""]
    if report.figures:
        parts += ["## Figures", ""]
        for fig in report.figures:
            parts += [f"### {fig.title}", "", fig.description, "", f"![{fig.title}]({fig.png})", ""]
    return "\n".join(parts).rstrip() + "\n"


def legend() -> str:
    return (f"`(0.50×)` value / baseline value; `(+1.20 pt)` accuracy minus the baseline's; "
            f"`{NOISY_MARK}` noisy latency (IQR/median > 10%); `failed`, `oom`, `skipped`: the cell produced no value "
            "(see Failures); `—`: not measured.")
