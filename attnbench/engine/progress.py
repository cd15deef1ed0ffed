"""Progress of a sweep on stderr: a tqdm bar with ETA on a terminal, one line per finished cell otherwise.

The bar's description is the cell being measured, its postfix how long that cell has run and the ETA; a cell that
does not end ``ok`` is printed above the bar with its error. In a log (not a terminal) each finished cell is a line
with its status, time and ETA, and a cell still running after a minute gets a ``still measuring`` line each minute.
The ETA weights the cells left by their expected work and counts a child's start-up per isolated cell
(:class:`CostEta`).
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Optional, Sequence, TextIO

from tqdm import tqdm

from ..suite.cells import Cell

__all__ = ["Progress", "CostEta", "format_seconds"]

#: an isolated cell's start-up before any was measured: importing torch in a fresh process on a small CPU
CHILD_STARTUP_GUESS_S = 3.0


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """The sweep's progress on ``stream``.

    Args:
        work: per cell to run (in order), its expected multiply-adds (:func:`attnbench.engine.cell_budget.expected_work`;
            None: unknown). The ETA weights the remaining cells by it, so a sweep that goes from small grids to
            large ones is not extrapolated from its fastest cells.
        isolated: per cell, whether it runs in a child process; each such cell costs a start-up (importing torch)
            whatever its size, which the ETA counts apart from the work.
        tick_s: how often the running cell's elapsed time is shown (the bar's postfix on a terminal; in a log, a
            ``still measuring`` line every ``tick_s``; default 1 s and 60 s).
    """

    def __init__(self, total: int, *, stream: Optional[TextIO] = None, enabled: bool = True,
                 tty: Optional[bool] = None, work: Optional[Sequence[Optional[float]]] = None,
                 isolated: Optional[Sequence[bool]] = None, tick_s: Optional[float] = None):
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.t0 = time.perf_counter()
        tty = self.stream.isatty() if tty is None else tty
        self.eta = CostEta(list(work) if work is not None else [None] * total,
                           list(isolated) if isolated is not None else [False] * total)
        self.bar = tqdm(total=total, file=self.stream, unit="cell", dynamic_ncols=True, leave=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]") \
            if enabled and tty else None
        self.tick_s = tick_s if tick_s is not None else (1.0 if self.bar is not None else 60.0)
        self._cell: Optional[Cell] = None
        self._cell_t0 = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None
        if enabled:
            self._ticker = threading.Thread(target=self._tick, name="attnbench-progress", daemon=True)
            self._ticker.start()

    def start(self, cell: Cell) -> None:
        with self._lock:
            self._cell, self._cell_t0 = cell, time.perf_counter()
        if self.bar is not None:
            self.bar.set_description_str(cell.describe())

    def _tick(self) -> None:
        """Show how long the running cell has taken, so a slow or hanging cell is visible while it runs."""
        while not self._stop.wait(self.tick_s):
            with self._lock:
                cell, since = self._cell, self._cell_t0
            if cell is None:
                continue
            running = format_seconds(time.perf_counter() - since)
            if self.bar is not None:
                eta = self.eta.remaining(self.done)
                self.bar.set_postfix_str(f"cell {running}" + (f", eta {format_seconds(eta)}" if eta is not None
                                                             else ""))
            else:
                print(f"    ... still measuring {cell.describe()}: {running}", file=self.stream, flush=True)

    def finish(self, cell: Cell, status: str, error: Optional[str], duration_s: float) -> None:
        with self._lock:
            self._cell = None
        if status != "skipped":
            self.eta.observe(self.done, duration_s)
        self.done += 1
        if not self.enabled:
            return
        eta = self.eta.remaining(self.done)
        eta_text = format_seconds(eta) if eta is not None else "?"
        if self.bar is not None:
            if status != "ok":
                self.bar.write(f"{status}: {cell.describe()}: {error}", file=self.stream)
            self.bar.set_postfix_str(f"eta {eta_text}")
            self.bar.update(1)
            return
        width = len(str(self.total))
        line = (f"[{self.done:>{width}}/{self.total}] {status:<6} {cell.describe()}  {duration_s:.2f}s"
                f"  eta {eta_text}")
        if status != "ok":
            line += f"\n    {error}"
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        if self.bar is not None:
            self.bar.close()


class CostEta:
    """Seconds left, from the cells measured so far and the expected work of those left.

    A cell's time is modelled, per kind (in this process, or in a child), as a fixed part (the harness, the
    metrics' minimum times, a child's start-up) plus a part proportional to its work, fitted by least squares
    (both parts non-negative) to the measured cells. Until cells of two different sizes are measured there is
    nothing to extrapolate by, and every cell counts as their mean. A kind with no measured cell yet counts as
    the other kind, plus a child's start-up (:data:`CHILD_STARTUP_GUESS_S`) for an isolated cell. Cells of unknown
    work count as the mean measured cell of their kind.
    """

    def __init__(self, work: list[Optional[float]], isolated: list[bool]):
        self.work, self.isolated = work, isolated
        self.seen: list[tuple[int, float]] = []  # (cell index, seconds) of measured cells

    def observe(self, index: int, seconds: float) -> None:
        if 0 <= index < len(self.work):
            self.seen.append((index, max(0.0, seconds)))

    def _fit(self, kind: bool) -> Optional[tuple[float, float, float]]:
        """(fixed seconds, seconds per MAC, mean seconds) of the cells of ``kind`` measured so far, or None."""
        times = [t for i, t in self.seen if self.isolated[i] == kind]
        if not times:
            return None
        mean_t = sum(times) / len(times)
        points = [(self.work[i], t) for i, t in self.seen if self.isolated[i] == kind and self.work[i]]
        if len({w for w, _ in points}) < 2:
            return mean_t, 0.0, mean_t
        mw = sum(w for w, _ in points) / len(points)
        mt = sum(t for _, t in points) / len(points)
        var = sum((w - mw) ** 2 for w, _ in points)
        rate = max(0.0, sum((w - mw) * (t - mt) for w, t in points) / var)
        fixed = mt - rate * mw
        if fixed < 0:  # through the origin instead
            fixed, rate = 0.0, sum(w * t for w, t in points) / sum(w * w for w, _ in points)
        return fixed, rate, mean_t

    def remaining(self, next_index: int) -> Optional[float]:
        if not self.seen:
            return None
        fits = {kind: self._fit(kind) for kind in (False, True)}
        if fits[True] is None:
            f, r, m = fits[False]
            fits[True] = (f + CHILD_STARTUP_GUESS_S, r, m + CHILD_STARTUP_GUESS_S)
        if fits[False] is None:
            f, r, m = fits[True]
            fits[False] = (max(0.0, f - CHILD_STARTUP_GUESS_S), r, max(0.0, m - CHILD_STARTUP_GUESS_S))
        total = 0.0
        for i in range(next_index, len(self.work)):
            fixed, rate, mean = fits[self.isolated[i]]
            w = self.work[i]
            total += fixed + rate * w if (w and rate > 0) else mean
        return total
