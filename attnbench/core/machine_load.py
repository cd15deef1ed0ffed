"""How busy the machine was: sampled before and after each cell, summarised in the manifest.

On a shared machine a timing means little without the load it was taken under: a burst of other work slows
many-small-op paths more than few-big-op ones, so it can flip a comparison (../shared/design/paired-measurement.md).
Two cheap readings, both from ``/proc`` (Linux; elsewhere ``None``):

* ``load``: the 1-minute load average (``os.getloadavg``), which counts this process too while it runs;
* ``busy``: the processes other than this one in state R (running or runnable) right now, read from
  ``/proc/<pid>/stat``; a point reading, so it catches a competitor the load average has not caught up with;
* ``steal``: the CPU seconds the hypervisor gave to other guests while this virtual machine wanted them, all CPUs
  together, since boot (``/proc/stat``, the ``steal`` field; 0 on bare metal). The difference around a cell is its
  ``steal_s``. No load average sees it: a neighbouring virtual machine on the same physical cores slows every call
  while this machine looks idle.

A run is "under load" (:func:`judge`, the one rule, used by the manifest, the report and ``compare``) when any of:

* at least :data:`PREEMPTED_SHARE` (2%) of its latency samples were preempted (``latency_preempted``: the process
  got less CPU than wall time during the sample; see :mod:`attnbench.core.uncertainty`): the direct evidence;
* another process was seen running at the start or end of at least :data:`BUSY_CELL_SHARE` (10%) of the cells;
* the mean 1-minute load average, less this process's own share (one unit while it measures), is at least
  :data:`UNDER_LOAD_SHARE` (0.5) of a core, or its maximum is above half the cores;
* the hypervisor stole at least :data:`STEAL_SHARE` (2%) of the CPU time of the cells (``steal_s`` over their
  ``duration_s`` times the cores).

A second busy process on a 2-core machine (load average up to 1.95, busy in 12 of 80 cells) passed the earlier
rule (max load − 1 above half the cores, busy in a quarter of the cells); each of the three readings above catches
it. The report prints a warning for such a run and ``compare`` says which of its two runs was under load.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Optional

__all__ = ["sample", "cell_columns", "summarize", "judge", "other_load", "UNDER_LOAD_SHARE", "BUSY_CELL_SHARE",
           "PREEMPTED_SHARE", "STEAL_SHARE", "OWN_LOAD"]

#: other load (beyond this process's one unit) of at least this many cores' worth, on average, is load
UNDER_LOAD_SHARE = 0.5
#: another running process seen in at least this share of the cells is load
BUSY_CELL_SHARE = 0.10
#: at least this share of preempted latency samples is load
PREEMPTED_SHARE = 0.02
#: at least this share of the cells' CPU time stolen by the hypervisor is load
STEAL_SHARE = 0.02
#: this process's own share of the load average while it measures (one busy thread)
OWN_LOAD = 1.0


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


def _steal_s() -> Optional[float]:
    """Seconds of CPU stolen by the hypervisor since boot, all CPUs (``/proc/stat``'s ``cpu`` line, field 8, in
    clock ticks); None without ``/proc/stat`` or the field (kernels before 2.6.11)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def sample() -> dict[str, Any]:
    """``{"load": 1-minute load average, "busy": other running processes, "steal": stolen CPU seconds since boot}``,
    each None where the system does not say."""
    try:
        load: Optional[float] = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {"load": load, "busy": _busy_processes(), "steal": _steal_s()}


def other_load(reading: Optional[dict[str, Any]] = None) -> float:
    """Cores busy with other work, approximately, from a :func:`sample` (taken now by default): the larger of the
    other running processes and the load average less :data:`OWN_LOAD` (0 without ``/proc`` or a load average).
    Used where a decision needs the load now (the accuracy metric's free threads); :func:`judge` rules on a run."""
    now = sample() if reading is None else reading
    return max(float(now["busy"] or 0), float(now["load"] or 0) - OWN_LOAD, 0.0)


def cell_columns(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The load columns of a results row."""
    steal = None
    if before.get("steal") is not None and after.get("steal") is not None:
        steal = round(max(0.0, after["steal"] - before["steal"]), 2)
    return {"load_before": before["load"], "load_after": after["load"], "busy_before": before["busy"],
            "busy_after": after["busy"], "steal_s": steal, "cpu_count": os.cpu_count()}


def summarize(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's ``load`` entry from the rows' load and latency columns (rows without them are ignored)."""
    loads, busy_cells, cells, max_busy, samples, preempted = [], 0, 0, 0, 0, 0
    steal, steal_wall = 0.0, 0.0
    cores = None
    for row in rows:
        values = [row.get("load_before"), row.get("load_after")]
        loads += [float(v) for v in values if _finite(v)]
        counts = [int(b) for b in (row.get("busy_before"), row.get("busy_after")) if _finite(b)]
        if counts:
            cells += 1
            busy_cells += max(counts) > 0
            max_busy = max(max_busy, *counts)
        if _finite(row.get("latency_n")) and _finite(row.get("latency_preempted")):
            samples += int(row["latency_n"])
            preempted += int(row["latency_preempted"])
        if _finite(row.get("cpu_count")):
            cores = int(row["cpu_count"])
        if _finite(row.get("steal_s")) and _finite(row.get("duration_s")):
            steal += float(row["steal_s"])
            steal_wall += float(row["duration_s"])
    cores = cores or os.cpu_count() or 1
    max_load = max(loads) if loads else None
    mean_load = round(sum(loads) / len(loads), 2) if loads else None
    out = {"cores": cores, "max_load": max_load, "mean_load": mean_load, "max_busy": max_busy,
           "cells_with_busy": busy_cells, "cells": cells, "latency_samples": samples,
           "preempted_samples": preempted, "steal_s": round(steal, 2), "steal_cpu_s": round(steal_wall * cores, 2)}
    out["under_load"], out["why"] = judge(out)
    return out


def judge(load: dict[str, Any]) -> tuple[bool, list[str]]:
    """(under load?, the readings that say so) from a :func:`summarize` entry (older manifests lack some keys)."""
    why = []
    cores = load.get("cores") or 1
    samples, preempted = load.get("latency_samples") or 0, load.get("preempted_samples") or 0
    if samples and preempted / samples >= PREEMPTED_SHARE:
        why.append(f"{preempted} of {samples} latency samples preempted")
    cells, busy = load.get("cells") or 0, load.get("cells_with_busy") or 0
    if cells and busy / cells >= BUSY_CELL_SHARE:
        why.append(f"another process running in {busy} of {cells} cells")
    steal, steal_cpu = load.get("steal_s") or 0.0, load.get("steal_cpu_s") or 0.0
    if steal_cpu and steal / steal_cpu >= STEAL_SHARE:
        why.append(f"the hypervisor stole {steal:g} s of {steal_cpu:g} CPU-seconds")
    mean_load, max_load = load.get("mean_load"), load.get("max_load")
    if _finite(mean_load) and mean_load - OWN_LOAD >= UNDER_LOAD_SHARE:
        why.append(f"mean 1-min load average {mean_load:g} on {cores} cores")
    elif _finite(max_load) and max_load - OWN_LOAD > UNDER_LOAD_SHARE * cores:
        why.append(f"1-min load average up to {max_load:g} on {cores} cores")
    return bool(why), why


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and value not in (float("inf"), float("-inf"))
