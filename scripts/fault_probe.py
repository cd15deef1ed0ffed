"""How many page faults does a timed call take, and does pinning glibc's allocator thresholds change it?
(docs/metrics.md, step 1b "Page faults").

For one attention at one shape: ``--rounds`` rounds, each from a freshly built module (as the latency metric's
epochs of short calls), timing one call of it and one of mhsa at the same shape, with the process's minor page
faults and kernel CPU time (``getrusage``) around each call. Prints one line per round and the spread of the ratio.

    python3 scripts/fault_probe.py dat 56 8 forward              # glibc's default, dynamic thresholds
    python3 scripts/fault_probe.py dat 56 8 forward --steady     # pinned as the latency metric pins them
"""
from __future__ import annotations

import argparse
import resource
import statistics as st

import torch

from attnbench.core import malloc_steady
from attnbench.metrics.latency import _Contender, _cpu_timer
from pairing_check import builder


def timed(c: _Contender) -> tuple[float, int, float]:
    """(ms, minor faults, kernel ms) of one sample after its re-warm call."""
    c.rewarm()
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall, _, _ = c.sample()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return wall * 1e3, after.ru_minflt - before.ru_minflt, (after.ru_stime - before.ru_stime) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("attention")
    p.add_argument("resolution", type=int)
    p.add_argument("batch", type=int)
    p.add_argument("pass_", choices=["forward", "forward_backward"])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--steady", action="store_true", help="pin glibc's thresholds first (malloc_steady.pin)")
    a = p.parse_args()
    print("malloc:", malloc_steady.pin() if a.steady else malloc_steady.state())
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    cell = _Contender(builder(a.attention, a.resolution, a.batch, a.pass_), _cpu_timer, 0.001, 0.25)
    base = _Contender(builder("mhsa", a.resolution, a.batch, a.pass_), _cpu_timer, 0.001, 0.25)
    cell.warm(2)
    base.warm(2)
    ratios = []
    for r in range(a.rounds):
        if r:
            cell.rebuild(r)
            base.rebuild(r)
        (ta, fa, sa), (tb, fb, sb) = timed(cell), timed(base)
        ratios.append(ta / tb)
        print(f"round {r:2d}: ratio {ta / tb:.3f} | {a.attention} {ta:8.2f} ms, {fa:6d} faults, {sa:6.2f} ms kernel"
              f" | mhsa {tb:8.2f} ms, {fb:6d} faults, {sb:6.2f} ms kernel")
    print(f"ratio: mean {st.mean(ratios):.3f}, sd {100 * st.stdev(ratios) / st.mean(ratios):.1f}% of the mean")


if __name__ == "__main__":
    main()
