"""Metric ``capacity``: the largest square token grid whose pass fits a memory budget, measured and predicted.

For the cell's attention, config, batch, dtype, device, pass and mode (not its grid: ``DEPENDS_ON``, so the runner
searches once and every grid's row carries the same columns), the peak memory of one call of the pass is measured
as the ``memory`` metric measures it (CUDA: ``max_memory_allocated`` above the level before the call; CPU: the
profiler's allocator events, docs/metrics.md) at growing square grids, then bisected:

1. **Grow** from ``start_grid``: double the side until a grid's peak exceeds the budget (an out-of-memory error
   counts as exceeding it). Once two grids have fitted, the next one is at most 1.25 × the grid the local power
   law predicts (never less than one ``step`` more), so the first grid over the budget is rarely far over it:
   over-budget probes are the expensive ones.
2. **Bisect** between the largest grid that fitted and the smallest that did not, until they are ``step`` apart;
   ``capacity_grid`` is the largest that fitted. The true limit lies in [capacity_grid, capacity_grid + step).

The **prediction** (``capacity_grid_predicted``) extrapolates the two largest fitting grids of the growth phase
(before any bisection) with the memory exponent between them (``capacity_mem_exponent``: peak ∝ tokens^b) to
the budget; ``capacity_agree`` says whether prediction and measurement are within one ``step``. Where they are not,
the memory is not one power law over that range (a constant or a linear term still dominating at the small
grids, a chunked kernel whose chunk size saturates, allocator rounding).

Budget (``budget_gib``): 0 (the default) means the device's memory on CUDA (``total_memory``) and **1/32 GiB
(32 MiB) on a CPU**. Why so small on a CPU: every probe computes a full pass, and mhsa's time is quadratic in the
tokens while its fused (SDPA) memory is linear: at 64 MiB its forward probes (224², 285²) took 1-3 minutes on this
project's loaded 2-core CPU; at 32 MiB a probe takes seconds. A suite sets ``budget_gib`` to what its machine can afford. Guards: ``max_grid`` (default 1024) and
``max_probe_s`` (default 60 s: a probe slower than that ends the growth, and ``capacity_limited_by`` says
``max_probe_s``; the grid found is then a lower bound).

Columns: ``capacity_budget_gib``, ``capacity_grid``, ``capacity_peak_bytes`` (at that grid), ``capacity_grid_predicted``,
``capacity_mem_exponent``, ``capacity_agree``, ``capacity_step``, ``capacity_limited_by`` (``budget``, ``max_grid``,
``max_probe_s``), ``capacity_probes`` ([[grid, peak bytes or null for out of memory], ...] in probe order),
``capacity_s`` (seconds the search took).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Annotated, Any, Callable, Optional

import torch
from pydantic import Field

from ._cpu_memory import cpu_peak_bytes
from ._passes import Step, first_call, maybe_compile
from ..core.validation import SettingsModel
from ._settings import read_settings
from .base import MetricContext
from .memory import cuda_peak_bytes

__all__ = ["DEFAULTS", "DEPENDS_ON", "CPU_BUDGET_GIB", "Search", "search", "predict_grid", "measure"]



class Settings(SettingsModel):
    """``settings.capacity`` (see the module docstring); ``budget_gib`` 0 is the device's default budget."""

    budget_gib: Annotated[float, Field(ge=0)] = 0.0
    start_grid: Annotated[int, Field(ge=1)] = 14
    step: Annotated[int, Field(ge=1)] = 4
    max_grid: Annotated[int, Field(ge=1)] = 1024
    max_probe_s: Annotated[float, Field(gt=0)] = 60.0


DEFAULTS: dict[str, Any] = Settings().model_dump()
DEPENDS_ON = ("attention", "label", "config", "batch", "dtype", "device", "pass", "mode")
#: the default budget on a CPU (see the module docstring)
CPU_BUDGET_GIB = 1 / 32
_GIB = 1 << 30


@dataclasses.dataclass
class Search:
    """The outcome of :func:`search`."""

    grid: int  # largest grid that fitted (0: not even the smallest)
    peak_bytes: Optional[int]
    predicted: Optional[int]
    exponent: Optional[float]
    limited_by: str
    probes: list[tuple[int, Optional[int]]]


def predict_grid(points: list[tuple[int, int]], budget_bytes: float) -> tuple[Optional[int], Optional[float]]:
    """(predicted largest grid, memory exponent in tokens) from the two largest fitting (grid, peak) points."""
    fits = sorted((g, b) for g, b in points if b is not None and 0 < b <= budget_bytes)
    if len(fits) < 2:
        return None, None
    (g1, b1), (g2, b2) = fits[-2], fits[-1]
    if g1 == g2 or b2 <= b1:
        return None, None
    exponent = math.log(b2 / b1) / math.log((g2 * g2) / (g1 * g1))
    tokens = (g2 * g2) * (budget_bytes / b2) ** (1 / exponent)
    return int(math.floor(math.sqrt(tokens))), exponent


def search(peak_at: Callable[[int], Optional[int]], budget_bytes: float, *, start_grid: int = 14, step: int = 4,
           max_grid: int = 1024, max_probe_s: float = 60.0) -> Search:
    """Largest square grid g (within ``step``) with ``peak_at(g) <= budget_bytes``; ``peak_at`` returns None for an
    out-of-memory failure. See the module docstring for the growth and bisection rules."""
    probes: list[tuple[int, Optional[int]]] = []
    cache: dict[int, Optional[int]] = {}
    slow = [False]

    def fits(g: int) -> bool:
        if g not in cache:
            t0 = time.perf_counter()
            cache[g] = peak_at(g)
            slow[0] = slow[0] or time.perf_counter() - t0 > max_probe_s
            probes.append((g, cache[g]))
        b = cache[g]
        return b is not None and b <= budget_bytes

    lo, hi, limited_by = 0, None, "budget"
    g = max(1, start_grid)
    while True:  # grow
        if not fits(g):
            hi = g
            break
        lo = g
        if g >= max_grid:
            limited_by = "max_grid"
            break
        if slow[0]:
            limited_by = "max_probe_s"
            break
        nxt = 2 * g
        predicted, _ = predict_grid([(p, b) for p, b in probes], budget_bytes)
        if predicted is not None:
            nxt = min(nxt, max(g + step, int(1.25 * predicted)))
        g = min(nxt, max_grid)
    predicted, exponent = predict_grid([(p, b) for p, b in probes if p <= lo], budget_bytes)
    if hi is not None:  # bisect (lo fits or is 0, hi does not)
        while hi - lo > step and not slow[0]:
            mid = (lo + hi) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid
        if hi - lo > step:
            limited_by = "max_probe_s"
    return Search(lo, cache.get(lo), predicted, exponent, limited_by, probes)


def _budget_bytes(budget_gib: float, device: torch.device) -> float:
    if budget_gib > 0:
        return budget_gib * _GIB
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    return CPU_BUDGET_GIB * _GIB


def _is_oom(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)) or (
        isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))


def peak_bytes_at(ctx: MetricContext, grid: int) -> Optional[int]:
    """Peak bytes of one call of the cell's pass at a grid×grid input (None: out of memory). On a CPU one pass (the
    allocator events of a fixed computation do not change between calls); on CUDA one unmeasured call first
    (cuBLAS workspaces, lazy initialisation)."""
    cell = dataclasses.replace(ctx, height=grid, width=grid)
    module = step = None
    try:
        module = cell.make_module()
        step = Step(maybe_compile(module, cell.mode), module, cell.make_input(), cell.pass_)
        if cell.mode == "compile":
            first_call(step, cell.attention)
        elif cell.device.type == "cuda":
            step.reset()
            step()
        step.reset()
        if cell.device.type == "cuda":
            return cuda_peak_bytes(step, cell.device)
        return cpu_peak_bytes(step)
    except Exception as e:  # noqa: BLE001 - an out-of-memory probe is an answer ("does not fit"), nothing else is
        if not _is_oom(e):
            raise
        return None
    finally:
        del module, step
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


def measure(ctx: MetricContext) -> dict[str, Any]:
    """The ``capacity_*`` columns (see the module docstring)."""
    opts = read_settings(ctx, "capacity", Settings)
    budget = _budget_bytes(opts["budget_gib"], ctx.device)
    t0 = time.perf_counter()
    found = search(lambda g: peak_bytes_at(ctx, g), budget, start_grid=opts["start_grid"], step=opts["step"],
                   max_grid=opts["max_grid"], max_probe_s=opts["max_probe_s"])
    agree = None if found.predicted is None else abs(found.predicted - found.grid) <= opts["step"]
    return {
        "capacity_budget_gib": budget / _GIB,
        "capacity_grid": found.grid,
        "capacity_peak_bytes": found.peak_bytes,
        "capacity_grid_predicted": found.predicted,
        "capacity_mem_exponent": found.exponent,
        "capacity_agree": agree,
        "capacity_step": opts["step"],
        "capacity_limited_by": found.limited_by,
        "capacity_probes": [[g, b] for g, b in found.probes],
        "capacity_s": time.perf_counter() - t0,
    }
