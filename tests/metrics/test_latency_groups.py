"""Shared-baseline groups in the latency metric (fake clocks, no real timing): how many samples each contender
takes per round, where they sit in the round, and that the resulting ratios carry no drift that is linear over a
round — where timing the contenders one after another does."""
from __future__ import annotations

import pytest

from attnbench.metrics.latency import Policy, round_schedule, sample_rounds, samples_per_round


def test_samples_per_round_go_as_the_square_root_of_the_cost_ratio():
    # one attention against its baseline: sqrt(1 / 0.02) = 7.1 -> 8 (even, capped at 8); sqrt(1 / 0.1) = 3.2 -> 4
    assert samples_per_round([1.0, 0.02]) == [1, 8]
    assert samples_per_round([1.0, 0.1]) == [1, 4]
    assert samples_per_round([0.01, 0.01]) == [1, 1]
    assert samples_per_round([0.01, 0.04]) == [2, 1]
    # mhsa 3 s with four attentions sharing its samples: sqrt(3 / c / 4) for agent 55 ms, bra 150 ms, dat 330 ms,
    # dbra 1.6 s = 3.7, 2.2, 1.5, 0.7 -> 4, 2, 2, 1
    assert samples_per_round([3.0, 0.055, 0.15, 0.33, 1.6]) == [1, 4, 2, 2, 1]


@pytest.mark.parametrize("counts", [[1, 7, 4, 3], [1, 2], [3, 1, 1], [1, 8, 3], [2, 2, 5]])
def test_each_contender_is_sampled_its_count_symmetrically_about_the_middle(counts):
    slots = round_schedule(counts)
    assert len(slots) % 2 == 1  # a middle slot exists
    for i, k in enumerate(counts):
        where = [j for j, slot in enumerate(slots) if i in slot]
        assert len(where) == k and all(slot.count(i) <= 1 for slot in slots)
        assert sorted(len(slots) - 1 - j for j in where) == where  # the mirror image of its slots is itself
    for i, k in enumerate(counts):
        if k == 1:
            assert i in slots[len(slots) // 2]


class DriftingClock:
    """Fake time: a call of ``units`` takes ``units × speed(t)`` seconds, the speed drifting linearly with the
    time ``t`` elapsed (by ``drift`` per second)."""

    def __init__(self, drift):
        self.t, self.drift = 0.0, drift

    def call(self, units):
        # the slowdown at the call's middle, t + wall / 2: wall = units · (1 + drift · (t + wall / 2))
        wall = units * (1.0 + self.drift * self.t) / (1.0 - self.drift * units / 2)
        self.t += wall
        return wall


class Timed:
    def __init__(self, clock, units):
        self.clock, self.units, self.short, self.block, self.call_s = clock, units, False, 1, units

    def rewarm(self):
        return 0.0

    def rebuild(self, epoch):
        return 0.0

    def sample(self):
        wall = self.clock.call(self.units)
        return wall, wall, wall


def _ratios(per_round, drift=0.2):
    clock = DriftingClock(drift)
    units = [1.0, 0.02, 0.05]  # a 1 s baseline, attentions 50x and 20x shorter
    contenders = [Timed(clock, u) for u in units]
    policy = Policy(target_rel_ci=1e-9, min_repeats=4, min_epochs=4, budget_s=1e9, max_repeats=4, epoch_s=0.0)
    r = sample_rounds(contenders, policy, per_round=per_round, baseline=0, reported=[1, 2])
    return [r.paired(i)["paired_ratios"] for i in (1, 2)], r


def test_symmetric_rounds_cancel_a_linear_drift():
    (agent, other), r = _ratios(samples_per_round([1.0, 0.02, 0.05]))
    assert r.stop == "max_repeats" and len(agent) == 4
    # 20% per second of drift moves a 1 s round's ends by ±10%; the ratios stay within 0.5% of 0.02 and 0.05
    assert all(v == pytest.approx(0.02, rel=5e-3) for v in agent)
    assert all(v == pytest.approx(0.05, rel=5e-3) for v in other)


def test_one_after_another_does_not():
    (agent, other), _ = _ratios(None)  # baseline, then each attention once: the attentions run after it
    assert all(abs(v / 0.02 - 1) > 0.05 for v in agent)  # biased by the drift over the baseline's call
