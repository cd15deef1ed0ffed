"""Peak CPU tensor memory of one call, from the PyTorch profiler's allocator events (not process RSS).

With ``profile_memory=True`` the profiler records one ``[memory]`` event for every allocation (+bytes) and every
free (−bytes) that goes through c10's CPU allocator, on the calling thread and on the intra-op worker threads the
profiler state is propagated to. That allocator serves every CPU tensor storage: module outputs, temporaries
inside composite ops and kernels (e.g. the CPU flash-attention buffers), autograd's saved tensors and gradients,
and the buffers of ``torch.compile``-generated code. Memory obtained outside it (BLAS packing buffers, the Python
heap, the profiler's own bookkeeping) is not seen.

The peak is the maximum of the running sum of those events in time order, starting at 0 when the call starts:
bytes held above what was held before the call. Events with equal timestamps keep the profiler's order.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterator

__all__ = ["METHOD", "peak_from_events", "cpu_peak_bytes"]

METHOD = "cpu_profiler_alloc_events"


def peak_from_events(events: list[tuple[int, int]]) -> int:
    """Peak of the running sum of ``(time_ns, signed_bytes)`` events, in time order (stable for ties); >= 0."""
    peak = held = 0
    for _, nbytes in sorted(events, key=lambda e: e[0]):
        held += nbytes
        peak = max(peak, held)
    return peak


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (Kineto prints start/stop and device-probe lines from C++ on every start)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cpu_peak_bytes(fn: Callable[[], None]) -> int:
    """Peak bytes held by CPU-allocator storages during ``fn()``, above the level at its start.

    Only the profiler's start and stop run with stderr silenced; ``fn`` itself runs with stderr intact.
    """
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():
        prof.start()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    events = [
        (e.start_ns(), int(e.nbytes()))
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == _cpu_device_type()
    ]
    return peak_from_events(events)


def _cpu_device_type():
    from torch._C._autograd import DeviceType

    return DeviceType.CPU
