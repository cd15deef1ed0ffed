"""The verdict on synthetic runs with known answers: winners, ties, crossovers, scaling exponents, Pareto fronts.

The synthetic sweep (report_fixtures.power_law_rows) follows power laws in the token count, with latency samples
that share a per-round machine slowdown between a cell and the baseline, as interleaved measurement sees it.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from attnbench.core import stats
from attnbench.report import load_runs, make_report
from attnbench.report.derive import add_derived
from attnbench.report.verdict import (best_by_resolution, crossovers, exact_winners, first_persistent,
                                      interval_winners, latency_winner, pareto_fronts, pareto_min,
                                      scaling_exponents)

from report_fixtures import POWER_LAW, power_law_rows, synthetic_manifest, write_run


def _frame(tmp_path, rows=None, **manifest_extra):
    rows = power_law_rows() if rows is None else rows
    return add_derived(load_runs([write_run(tmp_path / "run", rows, synthetic_manifest(rows, **manifest_extra))]))


def _winner(best: pd.DataFrame, size: int):
    return best.loc[best["height"] == size, "winner"].item()


def test_interval_winners_ties_only_overlapping_intervals():
    names = ["a", "b", "c"]
    assert interval_winners(names, [1.0, 1.1, 2.0], [0.9, 1.05, 1.9], [1.06, 1.2, 2.1]) == ("a", "b")
    assert interval_winners(names, [1.0, 1.1, 2.0], [0.9, 1.07, 1.9], [1.06, 1.2, 2.1]) == ("a",)
    # a missing interval is the point estimate: no tie unless equal
    assert interval_winners(names, [1.0, 1.0, 3.0], [np.nan] * 3, [np.nan] * 3) == ("a", "b")
    assert exact_winners(names, [5, 3, 3]) == ("b", "c")
    assert exact_winners(names, [5, 3, 4], higher_is_better=True) == ("a",)


def test_latency_winner_and_tie_on_a_power_law_sweep(tmp_path):
    best = best_by_resolution(_frame(tmp_path), "latency")
    # true latencies at 8×8: mhsa 0.1, agent 0.4, dbra-topk8 0.3, bra 0.8 ms: mhsa wins alone
    assert _winner(best, 8).names == ("mhsa",) and _winner(best, 8).basis == "paired ratio"
    # 64×64: agent 25.6 ms against mhsa 409.6 (ratio 1/16)
    assert _winner(best, 64).names == ("agent",)
    assert _winner(best, 64).ratio == pytest.approx(1 / 16, rel=0.05)
    # 16×16: mhsa 1.6, agent 1.6, dbra-topk8 1.59 ms: a tie, never a win
    assert _winner(best, 16).tie and {"agent", "dbra-topk8"} <= set(_winner(best, 16).names)


def test_paired_ratios_decide_where_median_intervals_cannot(tmp_path):
    """Load that hits both contenders in a round hides a 10% difference from the medians, not from the pairs."""
    laws = {"mhsa": (10.0, 1.0, 1, 1.0, 1, 1.0), "agent": (9.0, 1.0, 1, 1.0, 1, 1.0)}
    rows = power_law_rows(laws, sizes=(8,), shared_sigma=0.5, noise=0.01, oom=())
    paired = best_by_resolution(_frame(tmp_path / "p", rows), "latency")
    assert _winner(paired, 8).names == ("agent",) and _winner(paired, 8).basis == "paired ratio"
    unpaired_rows = [{k: v for k, v in r.items() if not k.startswith("paired")} for r in rows]
    unpaired = best_by_resolution(_frame(tmp_path / "u", unpaired_rows), "latency")
    assert _winner(unpaired, 8).basis == "median interval"
    assert set(_winner(unpaired, 8).names) == {"agent", "mhsa"}  # the medians' intervals overlap: a tie


def test_memory_and_macs_tie_only_when_equal(tmp_path):
    frame = _frame(tmp_path)
    memory = best_by_resolution(frame, "memory")
    assert _winner(memory, 8).names == ("mhsa", "agent", "bra")  # all 1 MB at 8×8
    assert _winner(memory, 32).names == ("agent", "bra")
    macs = best_by_resolution(frame, "macs")
    assert _winner(macs, 8).names == ("bra",)  # 0.5 M against 1 M and 2 M
    assert _winner(macs, 32).names == ("agent", "bra")  # 2 M · 16 = 0.5 M · 16^1.5 = 32 M
    assert _winner(macs, 64).names == ("agent",)


def test_crossover_is_the_first_resolution_from_which_it_stays_below(tmp_path):
    found = crossovers(_frame(tmp_path), "latency").set_index("series")
    # agent/mhsa = 4, 1, 1/4, 1/16 at 8, 16, 32, 64: below from 32×32 (16×16 is a tie)
    assert found.loc["agent", "crossover"] == (32, 32)
    assert [s for _, _, s in found.loc["agent", "statuses"]] == ["above", "tie", "below", "below"]
    # bra/mhsa = 8, 4, 2, 1: never below
    assert found.loc["bra", "crossover"] is None
    # dbra-topk8 ran out of memory at 64×64: marked failed there (issue 19), and no crossover can be claimed
    assert found.loc["dbra-topk8", "statuses"][-1][2] == "failed" and found.loc["dbra-topk8", "crossover"] is None
    assert first_persistent(["below", "above", "below", "below"]) == 2
    assert first_persistent(["below", "below"]) == 0
    assert first_persistent(["below", "tie"]) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scaling_exponents_recover_the_power_laws(tmp_path, seed):
    fits = scaling_exponents(_frame(tmp_path, power_law_rows(seed=seed, noise=0.05)))
    by = {(r["series"], r["quantity"]): r["fit"] for _, r in fits.iterrows()}
    for label, (_, k_lat, _, k_mem, _, k_macs) in POWER_LAW.items():
        assert by[(label, "latency")].slope.estimate == pytest.approx(k_lat, abs=0.05)
        assert by[(label, "memory")].slope.estimate == pytest.approx(k_mem, abs=1e-6)
        assert by[(label, "macs_fvcore")].slope.estimate == pytest.approx(k_macs, abs=1e-6)
        assert by[(label, "macs_analytic")].slope.estimate == pytest.approx(k_macs, abs=1e-6)
    lat = by[("mhsa", "latency")].slope
    assert lat.low < lat.estimate < lat.high and lat.high - lat.low < 0.2  # 4 points: a t-interval, not a point
    # attention term: mhsa reads N keys (1 + 1), the others a fixed 9 (1 + 0)
    assert by[("mhsa", "attention_term")].slope.estimate == pytest.approx(2.0)
    assert by[("agent", "attention_term")].slope.estimate == pytest.approx(1.0)


def test_pareto_min_by_hand():
    x = [1.0, 2.0, 2.0, 3.0, 0.5]
    y = [5.0, 4.0, 6.0, 1.0, 9.0]
    # (2, 6) is dominated by (1, 5); the rest trade one cost for the other
    assert pareto_min(x, y).tolist() == [True, True, False, True, True]
    assert pareto_min([1.0, 1.0], [2.0, 2.0]).tolist() == [True, True]  # equal points dominate neither


def test_pareto_fronts_on_the_sweep(tmp_path):
    fronts = pareto_fronts(_frame(tmp_path))
    at = {(r["kind"], r["height"]): r["members"] for _, r in fronts.iterrows()}
    # 64×64: agent is fastest and has the fewest MACs and the least memory of those measured
    assert at[("latency vs MACs", 64)] == ("agent",)
    assert at[("memory vs latency", 64)] == ("agent",)
    # 8×8: mhsa fastest (0.1 ms, 1 M MACs) and bra fewest MACs (0.5 M, 0.8 ms)
    assert at[("latency vs MACs", 8)] == ("mhsa", "bra")


def test_latency_winner_without_any_interval_uses_the_medians():
    rows = pd.DataFrame({"series": ["a", "b"], "latency_ms_median": [2.0, 1.0], "latency_ci_low": [np.nan] * 2,
                         "latency_ci_high": [np.nan] * 2, "latency_ratio": [1.0, 0.5],
                         "latency_ratio_low": [1.0, np.nan], "latency_ratio_high": [1.0, np.nan],
                         "latency_ratio_method": ["baseline", "medians"]})
    winner = latency_winner(rows)
    assert winner.names == ("b",) and winner.basis == "median interval" and winner.ratio == 0.5


def test_verdict_sections_lead_the_report(tmp_path):
    rows = power_law_rows()
    report, _, _ = make_report(load_runs([write_run(tmp_path / "run", rows, synthetic_manifest(rows))]))
    keys = [s.key for s in report.verdict]
    assert keys == ["best", "crossover", "scaling", "pareto"]
    best = report.verdict[0].tables[0]
    row = dict(zip(best.header, next(r for r in best.rows if r[0].startswith("latency"))))
    assert row["8×8"] == "mhsa 1.00×" and row["64×64"].startswith("agent 0.06")
    assert "(tie)" in row["16×16"]
    crossover = {r[0]: r[1] for r in report.verdict[1].tables[0].rows}
    assert crossover == {"agent": "from 32×32", "bra": "not in range (tie at 64×64)",
                         "dbra-topk8": "not in range (failed at 64×64)"}
    counts = {r[0]: r[1:] for r in report.verdict[2].tables[0].rows}
    assert counts["mhsa"][0].startswith("2.00") and counts["mhsa"][-1] == "2"
    assert counts["dbra-topk8"][-1] == "2 (4/3)"  # the theory follows the registry name, not the label


def test_paired_interval_is_what_the_latency_table_prints(tmp_path):
    frame = _frame(tmp_path)
    agent = frame[(frame["label"] == "agent") & (frame["height"] == 64)].iloc[0]
    assert agent["latency_ratio_method"] == "paired"
    assert agent["latency_ratio"] == agent["paired_ratio"]
    assert math.isclose(agent["latency_ratio_low"], agent["paired_ratio_low"])
    mhsa = frame[(frame["label"] == "mhsa") & (frame["height"] == 64)].iloc[0]
    assert (mhsa["latency_ratio"], mhsa["latency_ratio_method"]) == (1.0, "baseline")
    # the interval of the median came with the row; without it, it is computed from the raw samples
    assert agent["latency_ci_low"] == agent["latency_ms_ci_low"]
    interval = stats.median_interval(agent["latency_samples_ms"])
    rows = [{k: v for k, v in r.items() if not k.startswith(("latency_ms_ci", "paired"))} for r in power_law_rows()]
    old = _frame(tmp_path / "old", rows)
    old_agent = old[(old["label"] == "agent") & (old["height"] == 64)].iloc[0]
    assert (old_agent["latency_ci_low"], old_agent["latency_ci_high"]) == (interval.low, interval.high)
    assert old_agent["latency_ratio_method"] == "medians" and old_agent["latency_ratio_high"] < 1


def test_accuracy_fronts_name_the_cheapest_most_accurate_attentions(tmp_path):
    from attnbench.report.headline import accuracy_fronts

    acc = {"mhsa": 70.0, "agent": 72.0, "bra": 71.0, "dbra-topk8": 69.0}
    rows = [dict(r, acc_top1=acc[r["label"]]) for r in power_law_rows(sizes=(8,), oom=())]
    lines = accuracy_fronts(_frame(tmp_path, rows))
    # latency at 8×8: mhsa 0.1 < dbra-topk8 0.3 < agent 0.4 < bra 0.8 ms; accuracy rises only mhsa → agent
    by_cost = {line.split(" (run")[0]: line for line in lines}
    assert "mhsa (70.00 %" in by_cost["Accuracy vs latency_ms_median"]
    assert "→ agent (72.00 %" in by_cost["Accuracy vs latency_ms_median"]
    assert "bra (" not in by_cost["Accuracy vs latency_ms_median"].replace("dbra", "")
    # MACs: bra 0.5 M (71 %) < mhsa 1 M (70 %) < agent 2 M (72 %): mhsa is dominated by bra
    assert by_cost["Accuracy vs macs_fvcore"].endswith("bra (71.00 %, 500 k MACs) → agent (72.00 %, 2.00 M MACs).")
