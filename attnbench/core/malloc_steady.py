"""Put glibc's allocator in the state a long-running PyTorch process reaches anyway, so CPU timings do not depend
on what ran before in the process; and count the page faults a timed call takes.

Why. c10's CPU allocator takes every tensor storage from ``malloc``. glibc serves a request above its *mmap
threshold* with a fresh ``mmap`` — whose pages the kernel faults in and zeroes on first touch, inside the timed
call — and smaller ones from its heap, which is reused without faults. The threshold is dynamic: it starts at
128 KiB and rises to the size of each mmapped block that is freed, up to 32 MiB (and the heap-trim threshold
follows at twice that). So whether a 10 MiB temporary costs a few thousand page faults per call depends on the
history of the process: which cells ran before, in what order. On this project's CPU machine (AMD EPYC, 2026-12-06)
a DAT 56x56 batch-8 forward took 2,400-12,000 minor faults in some calls and none in others, up to 28 ms of
kernel time in a 118 ms call (docs/metrics.md, "Page faults").

What. :func:`pin` sets both thresholds with ``mallopt`` to the values the dynamic rule ends at (mmap threshold
32 MiB, trim threshold 64 MiB), which also switches the rule off: every process is then in the steady state from
its first cell. Storages of at most 32 MiB are reused from the heap; larger ones are mapped (and faulted in) on
every call — deterministically, as in any long-running process. glibc only: elsewhere :func:`pin` reports why it
did nothing. It cannot be undone in the process (glibc has no call that switches the dynamic rule back on), which
is harmless: it changes no result, only when memory goes back to the kernel.

Pure Python (ctypes); no torch.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys
from typing import Optional

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "pin", "state", "minor_faults"]

#: glibc's largest dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX = 4 MiB * sizeof(long))
MMAP_THRESHOLD = 32 * 1024 * 1024
#: the trim threshold the dynamic rule sets beside it (twice the mmap threshold)
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_state: Optional[str] = None


def _libc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it (musl does not)
        libc.mallopt
    except (OSError, AttributeError):
        return None
    return libc


def pin() -> str:
    """Set glibc's mmap and trim thresholds to their steady-state values (once per process); returns the state to
    record: ``"steady"`` when they are set, else ``"default: <why>"`` (not glibc, or ``mallopt`` refused)."""
    global _state
    if _state is not None:
        return _state
    libc = _libc()
    if libc is None:
        _state = "default: not glibc"
    elif libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 or libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        _state = "default: mallopt refused"
    else:
        _state = "steady"
    return _state


def state() -> str:
    """What :func:`pin` did in this process so far: its result, or ``"default"`` when it was not called."""
    return _state if _state is not None else "default"


def minor_faults() -> int:
    """Minor page faults of this process so far (``getrusage``; the difference around a call is the call's)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
