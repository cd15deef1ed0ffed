"""The suite's latency time budget (``settings.latency.suite_budget_s``), shared out across the cells by what they
still need.

Before each cell the runner asks :meth:`SuiteBudget.allowance`: the seconds left, times the cell's share of the
square roots of the expected work of the cells still to measure (its own and, paired, its baseline's:
:func:`attnbench.engine.cell_budget.expected_work`, MACs × batch × 3 for a training step from the probe's cost model; a
cell without a cost model counts as the median cell). The allowance becomes
the cell's ``budget_s`` (never more than ``max_time_s``, never less than ``floor_s``, 1 s); the latency metric stops
earlier when its interval reaches the target. After the cell, :meth:`SuiteBudget.spend` takes off what it really
spent (``latency_spent_s``), so a cheap, certain cell that stopped early leaves its unspent seconds to the cells
after it. Only runs that measure cells one after another share a budget (in this process or an isolated child);
batch executors run cells side by side and give each its ``max_time_s``.
"""
from __future__ import annotations

import math
import statistics
from typing import Mapping, Optional, Sequence

__all__ = ["SuiteBudget"]


class SuiteBudget:
    """Seconds of latency sampling for the cells still to run.

    Args:
        total_s: the whole budget.
        work: cell_id -> the expected work of one round of the cell (None: unknown), in run order.
        max_s: the most one cell may get (``settings.latency.max_time_s``).
        floor_s: the least one cell gets, even when the budget is spent (its minimum rounds still run).
    """

    def __init__(self, total_s: float, work: Mapping[str, Optional[float]], max_s: float, floor_s: float = 1.0):
        known = [w for w in work.values() if w is not None and w > 0]
        typical = statistics.median(known) if known else 1.0
        # the square root of the work: a cell 100x the work of another needs more time for the same rounds, but
        # the cheap one needs its minimum epochs too (a share by work alone left cheap cells a fraction of a second)
        self.weights = {cid: math.sqrt(w if w is not None and w > 0 else typical) for cid, w in work.items()}
        self.left_s, self.max_s, self.floor_s = float(total_s), float(max_s), float(floor_s)
        self._pending = dict(self.weights)

    def allowance(self, cell_id: str) -> float:
        """The cell's share of the seconds left, by its weight among the cells still pending."""
        return self.allowance_for([cell_id])

    def allowance_for(self, cell_ids: Sequence[str]) -> float:
        """The share of cells measured together (a shared-baseline group): the sum of their weights' share, at most
        ``max_s`` and at least ``floor_s`` per cell."""
        weights = [self._pending.get(c, self.weights.get(c)) for c in cell_ids]
        if not weights or any(w is None for w in weights):
            return self.max_s * max(1, len(cell_ids))
        total = sum(self._pending.values()) or sum(weights)
        share = max(self.left_s, 0.0) * sum(weights) / total
        return min(self.max_s * len(cell_ids), max(self.floor_s * len(cell_ids), share))

    def spend(self, cell_id: str, seconds: float) -> None:
        """The cell is done and took ``seconds`` of sampling (0 for a cell that failed before timing)."""
        self.spend_for([cell_id], seconds)

    def spend_for(self, cell_ids: Sequence[str], seconds: float) -> None:
        """The cells are done (measured together) and took ``seconds`` of sampling in all."""
        for cell_id in cell_ids:
            self._pending.pop(cell_id, None)
        self.left_s -= max(0.0, float(seconds))

    @property
    def pending(self) -> Sequence[str]:
        return list(self._pending)
