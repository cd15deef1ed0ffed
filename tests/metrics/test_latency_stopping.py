"""The latency metric's sampling loop under fake clocks (no real timing): it stops when the interval the reader
uses reaches the target, runs to its budget when it cannot, leaves preempted samples out of every statistic while
counting them, and judges a paired cell by the ratio's interval."""
from __future__ import annotations

import itertools
import math

import pytest

from attnbench.core import uncertainty
from attnbench.metrics.latency import Policy, finish_row, sample_rounds, summarize, summarize_paired


class FakeContender:
    """Returns (wall, cpu) pairs from ``times`` (cycled); counts rebuilds. ``cpu=None``: the CPU time equals the
    wall time (never preempted)."""

    def __init__(self, times, cpu=None, short=False):
        self._times = itertools.cycle(times)
        self._cpu = itertools.cycle(cpu) if cpu is not None else None
        self.short, self.block, self.rebuilds, self.rewarms = short, 1, 0, 0

    def rewarm(self):
        self.rewarms += self.short
        return 0.0

    def rebuild(self, epoch):
        self.rebuilds += 1
        return 0.0

    def sample(self):
        wall = next(self._times)
        cpu = next(self._cpu) if self._cpu is not None else wall
        return wall, cpu, wall


POLICY = dict(target_rel_ci=0.03, min_repeats=10, min_epochs=3, min_time_s=0.0, max_repeats=1000, budget_s=5.0,
              epoch_s=0.1, preempt_fraction=0.10)


def test_a_steady_cell_stops_at_the_target_after_its_minimum():
    c = FakeContender([0.010, 0.0101, 0.0099])  # ±1%: certain at once
    r = sample_rounds([c], Policy(**POLICY))
    # 0.1 s epochs of 10 ms rounds hold 10 rounds; three epochs are the minimum
    assert r.stop == "target" and r.epoch_sizes == [10, 10, 10] and len(r.times[0]) == 30
    assert c.rebuilds == 2  # a fresh module at the start of every epoch after the first
    assert r.spent_s == pytest.approx(sum(r.times[0]))


def test_epochs_that_disagree_run_the_cell_to_its_budget():
    # each epoch is steady, but epochs alternate 10 ms and 13 ms: a layout or load effect the interval must carry
    times = [0.010] * 10 + [0.013] * 10
    r = sample_rounds([FakeContender(times)], Policy(**{**POLICY, "budget_s": 1.0}))
    assert r.stop == "budget" and r.spent_s >= 1.0
    interval = r.interval()
    assert uncertainty.rel_half_width(interval) > 0.03


def test_more_rounds_narrow_the_interval_until_the_target():
    # noisy samples (±10% uniform-ish), steady between epochs: more rounds, then the target
    noise = [0.010 * (1 + 0.1 * math.sin(i * 1.7)) for i in range(97)]
    r = sample_rounds([FakeContender(noise)], Policy(**{**POLICY, "budget_s": 100.0}))
    assert r.stop == "target"
    assert len(r.epoch_sizes) >= 3
    assert uncertainty.rel_half_width(r.interval()) <= 0.03


def test_preempted_samples_are_kept_counted_and_left_out():
    # every fifth sample was preempted: its wall time is 10x, its CPU time that of a normal call
    walls = [0.010, 0.0101, 0.0099, 0.0100, 0.100]
    cpus = [0.010, 0.0101, 0.0099, 0.0100, 0.010]
    r = sample_rounds([FakeContender(walls, cpus)], Policy(**POLICY))
    row = summarize([t * 1e3 for t in r.times[0]], r.preempted[0], r.epoch_sizes)
    assert row["latency_n"] == len(r.times[0]) and row["latency_preempted"] == row["latency_n"] // 5
    assert 100.0 in [round(v, 6) for v in row["latency_samples_ms"]]        # kept in the raw data
    assert row["latency_ms_ci_high"] < 10.2 and row["latency_ms_median"] == pytest.approx(10.0, rel=0.01)
    assert r.stop == "target"  # the outliers did not widen the interval


def test_a_cell_that_is_always_preempted_stops_at_three_budgets_and_is_noisy():
    walls, cpus = [0.050], [0.010]
    r = sample_rounds([FakeContender(walls, cpus)], Policy(**{**POLICY, "budget_s": 1.0}))
    assert r.stop == "budget_exhausted" and 3.0 <= r.spent_s < 3.2
    row = finish_row(summarize([t * 1e3 for t in r.times[0]], r.preempted[0], r.epoch_sizes), 0.10)
    assert row["latency_n_used"] == 0 and row["latency_noisy"] and "preempted" in row["latency_noisy_reason"]
    assert row["latency_ms_median"] == pytest.approx(50.0)  # all samples rather than none


def test_paired_stop_uses_the_ratio_interval_not_the_medians():
    # the machine's speed swings 30% between epochs, on both contenders alike: the medians are uncertain,
    # the ratio (exactly 2) is not
    slow = [1.0] * 10 + [1.3] * 10
    a = FakeContender([0.020 * f for f in slow])
    b = FakeContender([0.010 * f for f in slow])
    r = sample_rounds([a, b], Policy(**POLICY))
    assert r.stop == "target" and len(r.epoch_sizes) == 3
    interval = r.interval()
    assert interval.estimate == pytest.approx(2.0) and uncertainty.rel_half_width(interval) < 1e-9
    alone = summarize([t * 1e3 for t in r.times[0]], r.preempted[0], r.epoch_sizes)
    assert alone["latency_ms_ci_high"] / alone["latency_ms_median"] > 1.03  # the median alone is not certain


def test_a_round_with_a_preempted_baseline_sample_leaves_the_ratio():
    a = [10.0] * 6
    b = [5.0, 5.0, 50.0, 5.0, 5.0, 5.0]
    row = summarize_paired(a, b, [False] * 6, [False, False, True, False, False, False], [6])
    assert row["paired_rounds"] == 6 and row["paired_rounds_used"] == 5
    assert row["paired_ratio"] == 2.0 and row["paired_ratio_high"] == 2.0
    assert row["paired_ratios"][2] == pytest.approx(0.2)  # kept in the raw data


def test_short_calls_are_rewarmed_and_long_ones_are_not():
    short, long_ = FakeContender([0.001], short=True), FakeContender([0.001], short=False)
    sample_rounds([short, long_], Policy(**POLICY))
    assert short.rewarms > 0 and long_.rewarms == 0


def test_max_repeats_caps_even_an_uncertain_cell():
    r = sample_rounds([FakeContender([0.01] * 10 + [0.02] * 10)], Policy(**{**POLICY, "max_repeats": 45,
                                                                              "budget_s": 1e9}))
    assert r.stop == "max_repeats" and len(r.times[0]) == 45 and sum(r.epoch_sizes) == 45


def test_pooled_processes_that_disagree_widen_the_interval():
    """Two worker processes, each certain on its own (tight epochs), 10% apart: the pooled interval holds both."""
    from attnbench.metrics.latency import merge_rows

    def process_row(level):
        a = [level * (1 + 0.001 * (i % 3)) for i in range(40)]
        b = [1.0] * 40
        row = summarize(a, epoch_sizes=[10] * 4)
        row.update(summarize_paired(a, b, [False] * 40, [False] * 40, [10] * 4), paired_baseline="base",
                   latency_noisy_rel_ci=0.10)
        return finish_row(row, 0.10)

    one, two = process_row(2.0), process_row(2.2)
    assert one["paired_ratio_high"] < 2.01 and two["paired_ratio_low"] > 2.19  # each alone: ±0.1%
    merged = merge_rows([one, two])
    assert merged["latency_processes"] == 2 and merged["paired_rounds"] == 80
    assert merged["paired_ratio_low"] <= 2.0 and merged["paired_ratio_high"] >= 2.2
    assert merged["latency_ms_ci_low"] <= 2.0 and merged["latency_ms_ci_high"] >= 2.2
