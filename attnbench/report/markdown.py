"""``summary.md``: warnings, a model suite's paper table, the verdict, the figures, the metric tables, the cells
without a value, the environment."""
from __future__ import annotations

from ..core import uncertainty
from .tables import NOISY_MARK, Table

__all__ = ["legend", "md_table", "render_summary"]


def md_table(table: Table) -> str:
    """A GitHub pipe table; ``|`` inside a cell is escaped; the best value of a column is **bold**."""
    def line(cells: list[str], i: int | None = None) -> str:
        texts = [c.replace("|", "\\|").replace("\n", " ") for c in cells]
        if i is not None:
            texts = [f"**{t}**" if table.is_bold(i, j) and t else t for j, t in enumerate(texts)]
        return "| " + " | ".join(texts) + " |"

    align = "--:" if table.numeric else "---"
    out = [line(table.header), "|" + "|".join(["---"] + [align] * (len(table.header) - 1)) + "|"]
    out += [line(row, i) for i, row in enumerate(table.rows)]
    return "\n".join(out)


def _tables(tables: list[Table]) -> list[str]:
    parts = []
    for table in tables:
        parts += [f"*{table.caption}*", "", md_table(table), ""]
    return parts


def render_summary(report) -> str:
    """The Markdown text of a :class:`attnbench.report.build.Report`, the answer first."""
    parts = [f"# attnbench report: {report.title}", ""]
    parts += [f"> **Warning.** {banner}\n" for banner in report.banners]
    parts += [f"> **Precision.** {note}\n" for note in report.precision]
    for section in getattr(report, "paper", []):
        parts += [f"## {section.title}", "", section.description, ""] + _tables(section.tables)
    if getattr(report, "ablation", None) is not None:
        parts += ablation_markdown(report.ablation)
    if report.verdict or report.verdict_notes:
        parts += ["## Verdict", ""]
        for section in report.verdict:
            parts += [f"### {section.title}", "", section.description, ""] + _tables(section.tables)
        parts += [f"{note}\n" for note in report.verdict_notes]
    if getattr(report, "why", None) or getattr(report, "why_notes", None):
        parts += ["## Why", ""] + [f"- {line}" for line in report.why_notes] + [""]
        for section in report.why:
            parts += [f"### {section.title}", "", section.description, ""] + _tables(section.tables)
    if report.figures:
        parts += ["## Figures", ""]
        for fig in report.figures:
            parts += [f"### {fig.title}", "", fig.description, "", f"![{fig.title}]({fig.png})", ""]
    parts += ["## Tables", "", report.baseline_note, "", f"Legend: {legend()}", ""]
    for section in report.sections:
        parts += [f"### {section.title}", "", section.description, ""] + _tables(section.tables)
        if section.key == "macs_fvcore" and report.uncounted:
            parts += ["Ops no counter counted: " + "; ".join(f"{k}: {v}" for k, v in report.uncounted.items()), ""]
    if report.missing is not None:
        parts += ["## Cells without a value", "", md_table(report.missing), ""]
    parts += ["## Environment", "", md_table(report.environment), "", md_table(report.attentions), ""]
    return "\n".join(parts).rstrip() + "\n"


def ablation_markdown(ablation) -> list[str]:
    """The ablation section (:class:`attnbench.report.ablation.Ablation`): summary, figures, one table per factor."""
    parts = ["## Ablation", ""] + [f"{text}\n" for text in ablation.summary]
    for fig in ablation.figures:
        parts += [f"![{fig.title}]({fig.png})", "", f"*{fig.description}*", ""]
    for section in ablation.sections:
        parts += [f"### {section.title}", "", section.description, ""] + _tables(section.tables)
    return parts


def legend() -> str:
    return ("`(0.50×)` value / baseline value; `(0.34× [0.33–0.35])` latency ratio with its 95% interval; "
            "`(≈1× tie [0.92–1.05])` an interval that holds 1: no winner; `(+1.20 pt [-1.1, +3.5], tie)` accuracy "
            "minus the baseline's with the 95% interval of the difference (`tie`: it holds 0, indistinguishable); "
            "**bold** the best of its column (latency and accuracy: with the attentions tied with it; accuracy: no "
            f"bold when every attention ties); `{NOISY_MARK}` "
            "noisy latency (the 95% interval the verdict uses, the ratio's or else the median's, wider than "
            f"±{uncertainty.NOISY_REL_CI:.0%}, or fewer than {uncertainty.MIN_SAMPLES} clean samples); `failed`, "
            "`oom`, `skipped`: the cell produced no value (see Cells without a value); `—`: not measured.")
