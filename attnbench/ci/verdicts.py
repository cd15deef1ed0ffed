"""Comparison rows of the CI gate and the PR mode, and their Markdown table (for a PR comment).

Time uses the team's rule, :func:`attnbench.core.stats.detect_change` (past the threshold **and** statistically clear;
verdicts ``slower``/``faster``, ``slower?``/``faster?`` when not clear, ``same``); only ``slower`` fails. FLOPs
and peak memory are exact counts: in the gate any difference from the baseline fails (``changed``, a win too, so
the baseline is refreshed on purpose — the rule of ``tests/test_regression_gate.py``); in the PR mode only an
increase fails (``higher``), since there is nothing to refresh.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

from ..core.stats import Change, Interval

__all__ = ["Row", "time_row", "count_rows", "missing_row", "render_markdown", "rows_json", "exit_code"]


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: ``ratio`` is head/base (an interval for time, exact for counts)."""

    benchmark: str
    metric: str
    base: str
    head: str
    ratio: Optional[Interval]
    verdict: str
    fails: bool


def time_row(benchmark: str, change: Change, base: str, head: str) -> Row:
    return Row(benchmark, "time", base, head, change.ratio, change.verdict, change.regressed)


def _count_text(metric: str, value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"{value / 2 ** 20:.3f} MiB" if metric == "memory" else f"{value / 1e6:.3f} MFLOP"


def count_rows(benchmark: str, base: dict[str, Any], head: dict[str, Any], exact: bool,
               memory_comparable: bool = True) -> list[Row]:
    """FLOPs and memory rows; ``exact``: any change fails (gate), else only an increase fails (PR mode).

    ``memory_comparable=False`` (baseline from another device, torch version or thread count) shows the memory
    row with verdict ``not comparable`` and never fails on it.
    """
    rows = []
    for metric, key in (("flops", "flops"), ("memory", "mem_peak_bytes")):
        b, h = base.get(key), head.get(key)
        ratio = Interval(h / b, h / b, h / b, 1) if b and h is not None else None
        if metric == "memory" and not memory_comparable:
            verdict, fails = "not comparable", False
        elif b == h:
            verdict, fails = "same", False
        elif exact:
            verdict, fails = "changed", True
        else:
            verdict = "higher" if (h or 0) > (b or 0) else "lower"
            fails = verdict == "higher"
        rows.append(Row(benchmark, metric, _count_text(metric, b), _count_text(metric, h), ratio, verdict, fails))
    return rows


def missing_row(benchmark: str, where: str, error: str = "", fails: bool = False) -> Row:
    """A benchmark that ran on one side only (``where`` = "base"/"head"/"baseline") or failed (``error``)."""
    verdict = f"failed: {error}" if error else f"missing in {where}"
    return Row(benchmark, "status", "", "", None, verdict, fails)


def _ratio_text(row: Row) -> str:
    r = row.ratio
    if r is None or math.isnan(r.estimate):
        return ""
    if row.metric != "time":
        return f"{r.estimate:.4f}×"
    return f"{r.estimate:.3f}× [{r.low:.3f}–{r.high:.3f}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(rows: list[Row], title: str, notes: list[str], changed_only: bool = False) -> str:
    """A Markdown section: title, table (time rows always, count rows when they moved), notes, verdict line."""
    shown = [r for r in rows if r.metric == "time" or r.verdict != "same"]
    if changed_only:
        shown = [r for r in shown if r.verdict != "same"]
    lines = [f"### {title}", "", "| benchmark | metric | base | head | ratio (95% CI) | verdict |",
             "|---|---|--:|--:|--:|---|"]
    for r in shown:
        verdict = f"**{r.verdict}**" if r.fails else r.verdict
        lines.append("| " + " | ".join(_cell(c) for c in (r.benchmark, r.metric, r.base, r.head, _ratio_text(r),
                                                            verdict)) + " |")
    failing = [r for r in rows if r.fails]
    lines.append("")
    lines += [f"{n}" for n in notes]
    lines.append("")
    lines.append(f"**{len(failing)} regression(s): exit 1**" if failing else "No regression: exit 0.")
    return "\n".join(lines) + "\n"


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        d = dataclasses.asdict(r)
        d["ratio"] = None if r.ratio is None else {"estimate": r.ratio.estimate, "low": r.ratio.low,
                                                   "high": r.ratio.high, "n": r.ratio.n}
        out.append(d)
    return out


def exit_code(rows: list[Row]) -> int:
    return 1 if any(r.fails for r in rows) else 0
