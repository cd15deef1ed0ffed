"""What a cell is expected to cost, and the time limit that follows from it.

The probe (:mod:`attnbench.suite.probe`) knows each cell's analytic multiply-adds per image (``cost(H, W)``). A cell's
expected *work* is those MACs times the batch, times 3 for a forward+backward pass (the backward costs about two
forwards). Two things follow from it:

* the **default time limit** of a cell (when the suite sets no ``settings.timeout_s``): the time
  :data:`CALLS` passes would take at a deliberately slow rate (:data:`SLOW_MACS_PER_S`), plus :data:`FLOOR_S`,
  never less than :data:`FLOOR_S` (it covers a child process's start-up: importing torch takes 2-3 s on a small
  CPU and 10 s under load) and never more than :data:`CEILING_S`. A hanging cell is then given up on after a
  minute rather than fifteen, while a big cell keeps the old limit. Compiled cells get :data:`COMPILE_S` more.
* the **ETA** of the progress line: remaining cells weighted by their work (:class:`attnbench.engine.progress.Progress`).

A cell with no cost model (a third-party class without ``cost``, a model cell) gets the ceiling and a neutral
weight.
"""
from __future__ import annotations

from typing import Any, Optional

from ..suite.cells import Cell

__all__ = ["CEILING_S", "FLOOR_S", "COMPILE_S", "CALLS", "SLOW_MACS_PER_S", "expected_work", "default_timeout"]

#: the longest default time limit of a cell (the old fixed default)
CEILING_S = 900.0
#: the shortest: child start-up (torch import, 2-3 s; ~10 s under load) and the harness, with a wide margin
FLOOR_S = 60.0
#: torch.compile of one module (tracing and code generation), added for ``mode: compile`` cells
COMPILE_S = 300.0
#: passes of the cell's module a cell may make: the gate, FLOP tracing, the memory passes, latency warm-up and
#: samples with the paired baseline (20 rounds of 4 calls by default), with room to spare
CALLS = 200
#: multiply-adds per second, deliberately slow (a loaded CPU thread runs small fp32 matmuls at 1-10 GMAC/s)
SLOW_MACS_PER_S = {"cpu": 1e8, "cuda": 1e9}
#: CPUs emulate half precision in software: this many times slower than float32
CPU_HALF_SLOWDOWN = 10.0


def expected_work(cell: Cell, macs: Optional[int]) -> Optional[float]:
    """Multiply-adds of one call of the cell's pass on its batch; None when the attention has no cost model."""
    if macs is None:
        return None
    return float(macs) * cell.batch * (3.0 if cell.pass_ == "forward_backward" else 1.0)


def default_timeout(cell: Cell, macs: Optional[int]) -> float:
    """The cell's time limit in seconds from its expected work, between :data:`FLOOR_S` and :data:`CEILING_S`."""
    work = expected_work(cell, macs)
    if work is None:
        return CEILING_S
    rate = SLOW_MACS_PER_S.get(cell.device.split(":")[0], SLOW_MACS_PER_S["cpu"])
    if cell.device == "cpu" and cell.dtype != "float32":
        rate /= CPU_HALF_SLOWDOWN
    seconds = FLOOR_S + CALLS * work / rate + (COMPILE_S if cell.mode == "compile" else 0.0)
    return float(min(CEILING_S, round(seconds)))  # whole seconds: the limit is quoted in error messages


def suite_timeout(settings: dict[str, Any], metrics: list[str]) -> tuple[bool, Optional[float]]:
    """(whether the suite fixes the limit, the fixed limit): ``settings.timeout_s`` when given (null: none); no
    limit for a suite that trains (``accuracy``: hours); else (False, None): each cell's :func:`default_timeout`."""
    if "timeout_s" in settings:
        value = settings["timeout_s"]
        return True, None if value is None else float(value)
    if "accuracy" in metrics:
        return True, None
    return False, None
