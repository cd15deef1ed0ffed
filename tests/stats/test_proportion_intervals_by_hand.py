"""Accuracy intervals: the Wilson score interval of a proportion and Newcombe's hybrid score interval of a
difference of two independent proportions, against values computed by hand and the published examples."""
from __future__ import annotations

import math

import pytest

from attnbench.core.stats import proportion_diff_interval, proportion_interval


def test_wilson_by_hand():
    # k = 8, n = 10, z = 1.959964: centre = (0.8 + z²/20) / (1 + z²/10),
    # half = z / (1 + z²/10) · sqrt(0.016 + z²/400)
    z = 1.959963984540054
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z / (1 + z * z / 10) * math.sqrt(0.8 * 0.2 / 10 + z * z / 400)
    assert proportion_interval(8, 10) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert proportion_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)


@pytest.mark.parametrize("k, n, expected", [
    (81, 263, (0.2553, 0.3662)),   # Newcombe (1998), single proportion, example a
    (15, 148, (0.0624, 0.1605)),   # example b
    (0, 20, (0.0, 0.1611)),        # example c: never below 0
    (1, 29, (0.0061, 0.1718)),     # example d
])
def test_wilson_published_examples(k, n, expected):
    assert proportion_interval(k, n) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("k1, n1, k2, n2, expected", [
    (56, 70, 48, 80, (0.2, 0.0524, 0.3339)),      # Newcombe (1998), difference, method 10, example a
    (9, 10, 3, 10, (0.6, 0.1705, 0.8090)),        # example b
    (6, 7, 2, 7, (0.5714, 0.0582, 0.8062)),       # example c
    (5, 56, 0, 29, (0.0893, -0.0381, 0.1926)),    # example d
])
def test_newcombe_published_examples(k1, n1, k2, n2, expected):
    assert proportion_diff_interval(k1, n1, k2, n2) == pytest.approx(expected, abs=1e-4)


def test_newcombe_is_built_from_the_two_wilson_intervals_and_is_antisymmetric():
    l1, u1 = proportion_interval(30, 40)
    l2, u2 = proportion_interval(20, 50)
    d, lo, hi = proportion_diff_interval(30, 40, 20, 50)
    assert d == pytest.approx(0.35)
    assert lo == pytest.approx(d - math.hypot(0.75 - l1, u2 - 0.4))
    assert hi == pytest.approx(d + math.hypot(u1 - 0.75, 0.4 - l2))
    d2, lo2, hi2 = proportion_diff_interval(20, 50, 30, 40)
    assert (d2, lo2, hi2) == pytest.approx((-d, -hi, -lo))
    assert proportion_interval(30, 40, conf=0.99)[0] < l1  # a higher confidence widens it


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="0 <= k <= n"):
        proportion_interval(11, 10)
    with pytest.raises(ValueError, match="n > 0"):
        proportion_interval(0, 0)
