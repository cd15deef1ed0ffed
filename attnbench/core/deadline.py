"""A time limit for a block of Python code: the one SIGALRM deadline of the engine's cells and the GPU check's.

Standard library only, so ``scripts/bench_kernels.py`` (the GPU check, which must run with nothing but torch and
triton beside the repository) can use it without importing the engine.

The error is raised in the main thread at the next Python bytecode after ``seconds``: a single long C call (a
kernel, a deadlock inside a library) finishes first, which is why both users keep a process-level limit behind this
one. Off the main thread (signals are delivered only there), without ``setitimer`` (Windows) or for ``None``/0 it
does nothing.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Callable, Iterator, Optional

__all__ = ["time_limit"]


@contextlib.contextmanager
def time_limit(seconds: Optional[float], error: Callable[[], BaseException]) -> Iterator[None]:
    """Raise ``error()`` in the main thread if the block runs longer than ``seconds``; the previous SIGALRM handler
    and a stopped timer are restored however the block ends."""
    if not seconds or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise error()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
