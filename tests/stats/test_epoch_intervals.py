"""The two epoch intervals of attnbench.core.stats, against hand computations."""
from __future__ import annotations

import math
import statistics

import pytest

from attnbench.core import stats

# t(0.975) quantiles from a printed table, so the test does not share scipy with the code
T975 = {3: 3.182, 4: 2.776, 7: 2.365}


def test_epoch_mean_interval_is_the_t_interval_of_the_log_epoch_medians():
    groups = [[1.0, 1.1, 0.9], [1.2, 1.3], [0.8], [1.05, 1.0, 1.1, 0.95]]
    logs = [math.log(statistics.median(g)) for g in groups]
    centre, sd = statistics.mean(logs), statistics.stdev(logs)
    half = T975[3] * sd / 2
    iv = stats.epoch_mean_interval(groups)
    assert iv.estimate == pytest.approx(math.exp(centre))
    assert iv.low == pytest.approx(math.exp(centre - half), rel=1e-3)
    assert iv.high == pytest.approx(math.exp(centre + half), rel=1e-3)
    assert iv.n == 10


def test_two_speed_modes_that_every_epoch_shares_do_not_widen_it():
    # every epoch of 8 rounds: half its rounds at 1.0, half at 1.6 (a module that lands in two speed modes)
    groups = [[1.0, 1.6] * 4 for _ in range(8)]
    groups = [[v * (1 + 0.01 * (i % 3)) for v in g] for i, g in enumerate(groups)]
    mean_iv, floor_iv = stats.epoch_mean_interval(groups), stats.epoch_interval(groups)
    assert mean_iv.high / mean_iv.low < 1.03         # the epochs agree within about 1%
    assert floor_iv.high / floor_iv.low > 1.5        # the pooled median's interval spans both modes
    logs = [math.log(statistics.median(g)) for g in groups]
    assert mean_iv.estimate == pytest.approx(math.exp(statistics.mean(logs)))


def test_epochs_that_disagree_widen_it():
    groups = [[1.0] * 5, [1.4] * 5, [1.0] * 5, [1.4] * 5, [1.0] * 5, [1.4] * 5, [1.0] * 5, [1.4] * 5]
    iv = stats.epoch_mean_interval(groups)
    logs = [math.log(statistics.median(g)) for g in groups]
    half = T975[7] * statistics.stdev(logs) / math.sqrt(8)
    assert math.log(iv.high / iv.estimate) == pytest.approx(half, rel=1e-3)


def test_one_epoch_falls_back_to_the_median_order_statistic_interval():
    values = [float(v) for v in range(1, 21)]
    assert stats.epoch_mean_interval([values]) == stats.median_interval(values)
