"""The CPU allocator controls of the latency metric: glibc's thresholds pinned to their steady state
(attnbench/core/malloc_steady.py) and block sizes in powers of two (latency.block_size)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from attnbench.core import malloc_steady
from attnbench.metrics.latency import MAX_BLOCK, _Contender, block_size

_glibc = pytest.mark.skipif(malloc_steady._libc() is None, reason="glibc only")

# Three rounds of: malloc 16 MiB, touch every page, free. Prints the minor faults of each round.
_ROUNDS = textwrap.dedent("""
    import ctypes, sys
    from attnbench.core import malloc_steady
    if sys.argv[1] == "pin":
        assert malloc_steady.pin() == "steady"
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size, faults = 16 << 20, []
    for _ in range(3):
        before = malloc_steady.minor_faults()
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)
        faults.append(malloc_steady.minor_faults() - before)
        libc.free(p)
    print(*faults)
""")


def _faults(mode: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", _ROUNDS, mode], capture_output=True, text=True, check=True)
    return [int(v) for v in out.stdout.split()]


@_glibc
def test_default_glibc_faults_again_after_the_threshold_moves_and_steady_does_not():
    pages = (16 << 20) // 4096
    default, steady = _faults("default"), _faults("pin")
    # default: round 1 is mmapped; freeing it raises the threshold, so round 2 grows the heap: faults again
    assert default[0] > pages // 2 and default[1] > pages // 2, default
    # steady: round 1 grows the heap (faults), rounds 2 and 3 reuse it
    assert steady[0] > pages // 2 and max(steady[1:]) < pages // 20, steady


@_glibc
def test_pin_reports_its_state_once_per_process():
    assert malloc_steady.pin() == "steady" and malloc_steady.pin() == "steady"
    assert malloc_steady.state() == "steady"


@pytest.mark.parametrize("call_s, expected", [
    (0.010, 1), (0.005, 1), (0.0049, 2), (0.0025, 2), (0.0024, 4), (0.0007, 8), (0.00038, 16), (1e-9, MAX_BLOCK),
])
def test_block_size_is_the_smallest_power_of_two_that_fills_the_minimum(call_s, expected):
    assert block_size(call_s, 0.005) == expected


def test_warm_sizes_the_block_from_the_median_of_the_calls_after_the_first():
    times = iter([0.050, 0.0026, 0.0030, 0.0020])  # a cold first call, then three warm ones (median 2.6 ms)

    class Step:
        def reset(self):
            pass

        def __call__(self):
            pass

    c = _Contender(Step, lambda fn: (next(times), None), min_block_s=0.005, short_call_s=0.25)
    c.warm(3)
    assert c.call_s == pytest.approx(0.0026) and c.block == 2  # one noisy time (2.0 or 5.0 ms) does not decide it
