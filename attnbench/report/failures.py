"""Failed cells, said first and shown where they are: a banner per attention, and the marks the verdict and the
figures put where a failed cell would have competed.

A cell **failed** when its row is ``failed`` or ``oom``, or it was not measured because its attention had already
failed the same way twice (``skipped`` with ``error_stage: repeated_failure``, :mod:`attnbench.engine.failure_policy`).
Cells a suite excluded or an attention cannot take (``skipped`` by the probe) are not failures: they are listed
with the cells without a value.

Without these marks an attention that failed everywhere simply vanished: the winners named only the others, the
crossover table showed ``—`` and the figures' legends dropped it.
"""
from __future__ import annotations

import collections
from typing import Optional

import pandas as pd

from ..engine.failure_policy import REPEAT_STAGE
from ..core.results import FAILED_STATUSES

__all__ = ["failed_mask", "failure_banners", "failed_at", "with_failures", "failed_legend"]

#: what a table cell says for an attention that failed there
FAILED = "failed"


def failed_mask(frame: pd.DataFrame) -> pd.Series:
    """True on the rows of failed cells (see the module docstring)."""
    status = frame["status"].astype(str)
    stage = frame["error_stage"].astype(str) if "error_stage" in frame else pd.Series("", index=frame.index)
    return status.isin(FAILED_STATUSES) | ((status == "skipped") & (stage == REPEAT_STAGE))


def _why(rows: pd.DataFrame) -> str:
    """The errors of an attention's failed cells, most frequent first: 'ValueError: boom (4 cells)'."""
    measured = rows[rows["error_stage"].astype(str) != REPEAT_STAGE] if "error_stage" in rows else rows
    counts = collections.Counter(str(e) for e in measured["error"].fillna("no error text"))
    parts = [f"{error}" + (f" ({n} cells)" if n > 1 else "") for error, n in counts.most_common(3)]
    if len(counts) > 3:
        parts.append(f"{len(counts) - 3} other errors")
    return "; ".join(parts)


def failure_banners(frame: pd.DataFrame) -> list[str]:
    """One banner per (run, attention) with failed cells: how many, why, and how to measure them again."""
    if frame.empty or "status" not in frame:
        return []
    bad = frame[failed_mask(frame)]
    several = frame["run_id"].nunique() > 1
    banners = []
    for (run_id, series), rows in bad.groupby(["run_id", "series"], sort=False):
        total = int(((frame["run_id"] == run_id) & (frame["series"] == series)).sum())
        stage = rows["error_stage"].astype(str) if "error_stage" in rows else pd.Series("", index=rows.index)
        repeats = int((stage == REPEAT_STAGE).sum())
        measured = len(rows) - repeats
        text = f"`{series}` failed in {measured} of its {total} cells"
        if repeats:
            text += f" and {repeats} more were not measured after it failed the same way twice"
        where = f" of run `{run_id}`" if several else ""
        banners.append(f"{text}{where}: {_why(rows)}. Its failed cells are marked `{FAILED}` in the verdict, the "
                       f"crossover tables and the figures (not `—`); after a fix, `attnbench run --resume "
                       f"{run_id} --retry-failed` measures them again.")
    return banners


def all_failed(frame: pd.DataFrame) -> dict:
    """``{run_id: sentence}`` for each run none of whose cells measured anything (no ``ok`` row): its verdict is
    that sentence, not tables in which every entry says ``failed``."""
    out = {}
    for run_id, rows in frame.groupby("run_id", sort=False):
        if (rows["status"].astype(str) == "ok").any():
            continue
        counts = rows["status"].astype(str).value_counts()
        tally = ", ".join(f"{n} {status}" for status, n in counts.items())
        failed = rows[failed_mask(rows)]
        errors = f" Errors, most frequent first: {_why(failed)}." if len(failed) else ""
        out[run_id] = (f"No cell of run `{run_id}` was measured ({tally} of {len(rows)} cells), so it has no winner, "
                       f"crossover, scaling exponent or front to report.{errors} Every cell is listed under "
                       f"\"Cells without a value\"; after a fix, `attnbench run --resume {run_id} --retry-failed` "
                       "measures them again.")
    return out


def failed_at(frame: pd.DataFrame, run_id, context: tuple, pass_=None, batch=None) -> dict[tuple, list[str]]:
    """(H, W) -> the series that failed there, in run ``run_id`` and (device, dtype, mode) ``context``, at
    ``pass_``/``batch`` when given (any when None)."""
    if frame.empty:
        return {}
    device, dtype, mode = context
    rows = frame[failed_mask(frame) & (frame["run_id"] == run_id) & (frame["device"] == device)
                 & (frame["dtype"] == dtype) & (frame["mode"] == mode)]
    if pass_ is not None:
        rows = rows[(rows["pass"] == pass_) & (rows["batch"] == batch)]
    out: dict[tuple, list[str]] = {}
    for _, r in rows.iterrows():
        names = out.setdefault((r["height"], r["width"]), [])
        if r["series"] not in names:
            names.append(r["series"])
    return out


def with_failures(text: Optional[str], failed: list[str]) -> str:
    """A verdict cell with the attentions that failed there: 'dbra 0.50× · failed: mine' (or 'failed: mine')."""
    if not failed:
        return text if text is not None else "—"
    note = f"{FAILED}: {', '.join(failed)}"
    return f"{text} · {note}" if text else note


def failed_legend(cells: pd.DataFrame, colors: dict, markers: dict) -> dict:
    """Legend entries 'mine: failed' for the series with failed cells among ``cells`` (a figure's cells without a
    value), in the series' colour and marker: a series that failed everywhere draws no line, and would otherwise
    be missing from the legend."""
    if cells is None or not len(cells):
        return {}
    from matplotlib.lines import Line2D  # only the figures need matplotlib (slow to import)

    bad = cells[failed_mask(cells)] if "error_stage" in cells else cells[cells["status"].isin(FAILED_STATUSES)]
    out = {}
    for series in dict.fromkeys(bad["series"].dropna()):
        out[f"{series}: {FAILED}"] = Line2D([], [], color=colors.get(series, "0.3"), marker=markers.get(series, "o"),
                                            linestyle=":", markersize=6)
    return out
