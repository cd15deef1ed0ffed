"""The accuracy statistics of attnbench.core.stats against published worked examples and hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from attnbench.core import stats


@pytest.mark.parametrize("k, n, low, high", [
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I, method 3 (Wilson)
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_newcombe_1998(k, n, low, high):
    lo, hi = stats.proportion_interval(k, n)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_wilson_interval_is_the_score_test_inversion():
    """At each limit p the score statistic |k/n − p| / sqrt(p(1−p)/n) equals z (an independent check)."""
    k, n = 841, 1000
    for p in stats.proportion_interval(k, n):
        assert abs(k / n - p) / math.sqrt(p * (1 - p) / n) == pytest.approx(1.959964, rel=1e-5)


@pytest.mark.parametrize("k1, n1, k2, n2, low, high", [
    # Newcombe (1998), "Interval estimation for the difference between independent proportions", Table II,
    # method 10 (hybrid score)
    (56, 70, 48, 80, 0.0524, 0.3339), (9, 10, 3, 10, 0.1705, 0.8090), (5, 56, 0, 29, -0.0381, 0.1926),
    (0, 10, 0, 20, -0.1611, 0.2775), (0, 10, 0, 10, -0.2775, 0.2775), (10, 10, 0, 20, 0.6791, 1.0),
    # Fagerland, Lydersen & Laake, "Statistical analysis of contingency tables" (2017), ch. 4: Perondi et al.
    (7, 34, 1, 34, 0.0189, 0.3404),
])
def test_unpaired_difference_matches_published_values(k1, n1, k2, n2, low, high):
    diff, lo, hi = stats.proportion_diff_interval(k1, n1, k2, n2)
    assert diff == pytest.approx(k1 / n1 - k2 / n2)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_paired_difference_matches_published_value():
    # Fagerland, Lydersen & Laake (2017), ch. 8, Cavo et al. 2012: Newcombe's square-and-add interval for paired
    # data, estimate -0.0621 (95% CI -0.1186 to -0.0046)
    diff, lo, hi = stats.paired_proportion_diff_interval(59, 6, 16, 80)
    assert (round(diff, 4), round(lo, 4), round(hi, 4)) == (-0.0621, -0.1186, -0.0046)


def test_paired_interval_without_correlation_is_the_unpaired_square_and_add():
    # a*d - b*c between 0 and n/2: phi is 0 and the limits combine the two Wilson intervals as the unpaired form
    a, b, c, d = 10, 20, 20, 41  # ad - bc = 10 <= n/2
    n = a + b + c + d
    _, lo, hi = stats.paired_proportion_diff_interval(a, b, c, d)
    _, ulo, uhi = stats.proportion_diff_interval(a + b, n, a + c, n)
    assert (lo, hi) == pytest.approx((ulo, uhi))


def test_paired_interval_is_narrower_when_the_verdicts_agree():
    # the same marginals (840 vs 830 right of 1000), strongly correlated verdicts: a much narrower interval
    _, lo_paired, hi_paired = stats.paired_proportion_diff_interval(820, 20, 10, 150)
    _, lo, hi = stats.proportion_diff_interval(840, 1000, 830, 1000)
    assert hi_paired - lo_paired < 0.5 * (hi - lo)


def test_paired_interval_covers_at_the_nominal_rate():
    """Simulated paired classifiers with a known difference: about 95% of the intervals hold it."""
    rng = np.random.default_rng(0)
    probs = np.array([0.78, 0.06, 0.03, 0.13])  # both right, only first, only second, both wrong
    truth = probs[1] - probs[2]
    tables = rng.multinomial(500, probs, size=2000)
    hits = 0
    for a, b, c, d in tables:
        _, lo, hi = stats.paired_proportion_diff_interval(int(a), int(b), int(c), int(d))
        hits += lo <= truth <= hi
    assert 0.93 <= hits / len(tables) <= 0.975


def test_mcnemar_exact_and_chi_square_by_hand():
    assert stats.mcnemar(1, 9) == pytest.approx(22 / 1024)  # 2·P(X <= 1), X ~ B(10, ½): 2·(1 + 10) / 2^10
    assert stats.mcnemar(1, 7) == pytest.approx(18 / 256)  # Bentur et al. 2009: exact conditional p = 0.070
    assert stats.mcnemar(0, 0) == 1.0 and stats.mcnemar(5, 5) == 1.0
    # b + c >= 25: chi-square with continuity correction, (|10 - 30| - 1)^2 / 40 = 9.025 on 1 df
    assert stats.mcnemar(10, 30) == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    assert stats.mcnemar(10, 30, exact=True) == pytest.approx(2 * sum(math.comb(40, i) for i in range(11)) / 2 ** 40)


def test_welch_interval_by_hand():
    diff, lo, hi = stats.welch_diff_interval([84.0, 78.0, 90.0], [81.0, 80.0, 82.0])
    se = math.sqrt(36 / 3 + 1 / 3)
    df = (36 / 3 + 1 / 3) ** 2 / ((36 / 3) ** 2 / 2 + (1 / 3) ** 2 / 2)
    from scipy import stats as sst

    t = sst.t.ppf(0.975, df)
    assert diff == pytest.approx(3.0) and (lo, hi) == pytest.approx((3 - t * se, 3 + t * se))
    with pytest.raises(ValueError, match="needs >= 2 values"):
        stats.welch_diff_interval([1.0], [1.0, 2.0])


def test_bad_counts_name_the_problem():
    with pytest.raises(ValueError, match="0 <= k <= n"):
        stats.proportion_interval(5, 4)
    with pytest.raises(ValueError, match="counts >= 0"):
        stats.mcnemar(-1, 2)
