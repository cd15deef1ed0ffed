"""How busy the machine was: sampled before and after each cell, summarised in the manifest.

On a shared machine a timing means little without the load it was taken under: a burst of other work slows
many-small-op paths more than few-big-op ones, so it can flip a comparison (../shared/design/paired-measurement.md).
Two cheap readings, both from ``/proc`` (Linux; elsewhere ``None``):

* ``load``: the 1-minute load average (``os.getloadavg``), which counts this process too while it runs;
* ``busy``: the processes other than this one in state R (running or runnable) right now, read from
  ``/proc/<pid>/stat``; a point reading, so it catches a competitor the load average has not caught up with.

A run is "under load" when the largest load average seen, less this process's own share (one unit while it
measures), exceeds half the cores, or when another process was seen running at the start or end of at least a
quarter of the cells. The report prints a warning for such a run.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Optional

__all__ = ["sample", "cell_columns", "summarize", "UNDER_LOAD_SHARE"]

#: other load above this fraction of the cores marks a run measured under load
UNDER_LOAD_SHARE = 0.5


def _busy_processes() -> Optional[int]:
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    busy = 0
    for pid in pids:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                text = f.read()
        except OSError:
            continue  # it ended while we looked
        # the state is the first field after the parenthesised command name, which may itself hold spaces
        state = text[text.rfind(b")") + 2:text.rfind(b")") + 3]
        busy += state == b"R"
    return busy


def sample() -> dict[str, Any]:
    """``{"load": 1-minute load average or None, "busy": other running processes or None}``."""
    try:
        load: Optional[float] = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {"load": load, "busy": _busy_processes()}


def cell_columns(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The load columns of a results row."""
    return {"load_before": before["load"], "load_after": after["load"], "busy_before": before["busy"],
            "busy_after": after["busy"], "cpu_count": os.cpu_count()}


def summarize(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's ``load`` entry from the rows' load columns (rows without them are ignored)."""
    loads, busy_cells, cells, max_busy = [], 0, 0, 0
    for row in rows:
        values = [row.get("load_before"), row.get("load_after")]
        loads += [v for v in values if v is not None]
        counts = [b for b in (row.get("busy_before"), row.get("busy_after")) if b is not None]
        if counts:
            cells += 1
            busy_cells += max(counts) > 0
            max_busy = max(max_busy, *counts)
    cores = os.cpu_count() or 1
    max_load = max(loads) if loads else None
    under = bool((max_load is not None and max_load - 1 > UNDER_LOAD_SHARE * cores)
                 or (cells and busy_cells / cells >= 0.25))
    return {"cores": cores, "max_load": max_load, "mean_load": round(sum(loads) / len(loads), 2) if loads else None,
            "max_busy": max_busy, "cells_with_busy": busy_cells, "cells": cells, "under_load": under}
