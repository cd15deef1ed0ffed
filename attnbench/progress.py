"""Progress of a sweep on stderr: a tqdm bar with ETA on a terminal, one line per finished cell otherwise.

The bar's description is the cell being measured; a cell that does not end ``ok`` is printed above the bar with
its error. In a log (not a terminal) each finished cell is a line with its status, time and an ETA from the mean
cell time so far.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

from tqdm import tqdm

from .cells import Cell

__all__ = ["Progress", "format_seconds"]


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    def __init__(self, total: int, *, stream: Optional[TextIO] = None, enabled: bool = True,
                 tty: Optional[bool] = None):
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.t0 = time.perf_counter()
        tty = self.stream.isatty() if tty is None else tty
        self.bar = tqdm(total=total, file=self.stream, unit="cell", dynamic_ncols=True, leave=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]") \
            if enabled and tty else None

    def start(self, cell: Cell) -> None:
        if self.bar is not None:
            self.bar.set_description_str(cell.describe())

    def finish(self, cell: Cell, status: str, error: Optional[str], duration_s: float) -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            if status != "ok":
                self.bar.write(f"{status}: {cell.describe()}: {error}", file=self.stream)
            self.bar.update(1)
            return
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        width = len(str(self.total))
        line = (f"[{self.done:>{width}}/{self.total}] {status:<6} {cell.describe()}  {duration_s:.2f}s"
                f"  eta {format_seconds(eta)}")
        if status != "ok":
            line += f"\n    {error}"
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
