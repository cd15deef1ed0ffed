"""The CI benchmarks as pytest-benchmark tests: one per case of :mod:`attnbench.ci.cases`.

``pytest benchmarks --benchmark-json out.json`` times every case with pytest-benchmark's calibration (rounds and
iterations chosen from the timer's precision and ``--benchmark-max-time``) and stores, in each benchmark's
``extra_info``, the case's parameters, its FlopCounterMode FLOPs of one call and its peak memory
(``mem_peak_bytes``, ``mem_method``: CUDA max allocated or the CPU profiler's allocator events), the device and
the thread count. ``--benchmark-disable`` runs each body once (a smoke test of the machinery, as ``.ci/run``
does); ``--benchmark-autosave`` / ``--benchmark-compare`` work as usual. The gate (``attnbench ci``) times the
same cases against a reference workload instead; see docs/ci.md.
"""
from __future__ import annotations

import pytest

from attnbench.ci.cases import all_cases
from attnbench.ci.costs import deterministic_columns


@pytest.mark.benchmark(warmup=True, warmup_iterations=3)
@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.name)
def test_bench(benchmark, case, bench_device):
    work = case.build(bench_device)
    benchmark.group = case.group
    benchmark.extra_info.update(case.params)
    benchmark.extra_info.update(deterministic_columns(work))
    assert benchmark.extra_info["flops"] > 0 and benchmark.extra_info["mem_peak_bytes"] > 0
    benchmark(work)
