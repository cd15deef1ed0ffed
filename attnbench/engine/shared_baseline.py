"""Shared-baseline groups: the cells of one shape whose latency is measured together, against one series of
baseline calls (``settings.latency.shared_baseline``, default on).

A paired cell times the suite baseline beside itself, so a shape with four attentions used to time its baseline
(mhsa: 3 s a call at 112x112 forward+backward on 2 CPU cores) in five cells: half of the resolution sweep's
sampling time went to re-timing it (docs/metrics.md, "Shared baseline"). A group is the cells that share one
baseline cell — that cell and every attention paired with it — and runs when its first cell runs: that cell's
latency stage measures the whole group (:meth:`attnbench.engine.execute.CellRunner.measure`, ``group=``), and the other
cells take their columns from it when their turn comes (their other metrics run in their own cells as before).

Only cells measured one after another in this process are grouped (not isolated children or batch jobs), only in
eager mode, and not with ``processes > 1``. A grouped measurement that fails is measured again alone and grouping
stops for the rest of the run, so an attention that hangs costs one extra time limit, not one per shape.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from ..suite.cells import Cell

__all__ = ["LatencyGroups", "group_timeout"]


class LatencyGroups:
    """Which cells of a plan are measured together, and when.

    Args:
        cells: the cells to run, in run order.
        baselines: cell id -> the baseline cell it is paired with (the plan's ``baselines``).
        metrics: the suite's metrics; settings: the suite's settings.
        groupable: whether a cell may be grouped (the runner: measured in this process).
    """

    def __init__(self, cells: list[Cell], baselines: dict[str, Cell], metrics: list[str], settings: dict[str, Any],
                 groupable: Callable[[Cell], bool]):
        self.enabled = False
        if "latency" in metrics:
            from ..metrics.latency import _merge  # the latency settings' one reader: defaults and checks

            latency = _merge(settings.get("latency"))
            self.enabled = latency["shared_baseline"] and latency["paired"] and latency["processes"] == 1
        base_ids = {b.cell_id for b in baselines.values()}
        self._key: dict[str, str] = {}
        self._members: dict[str, list[Cell]] = {}
        for cell in cells:
            base = baselines.get(cell.cell_id)
            key = base.cell_id if base is not None else (cell.cell_id if cell.cell_id in base_ids else None)
            if key is None or cell.mode != "eager" or not groupable(cell):
                continue
            self._key[cell.cell_id] = key
            self._members.setdefault(key, []).append(cell)
        self._started: set[str] = set()

    def take(self, cell: Cell, left_out: Callable[[Cell], bool]) -> Optional[list[Cell]]:
        """The other cells to measure with ``cell`` when it is the first of its group to run (those for which
        ``left_out`` is false: e.g. an attention already skipped for repeated failures), else None."""
        key = self._key.get(cell.cell_id)
        if not self.enabled or key is None or key in self._started:
            return None
        self._started.add(key)
        others = [c for c in self._members[key] if c.cell_id != cell.cell_id and not left_out(c)]
        return others or None

    def give_up(self) -> None:
        """A grouped measurement failed: measure every later cell alone."""
        self.enabled = False


def group_timeout(limits: list[Optional[float]]) -> Optional[float]:
    """The time limit of a grouped cell: the sum of its cells' limits (None when any has none)."""
    return None if any(v is None for v in limits) else float(sum(limits))
