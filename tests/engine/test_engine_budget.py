"""The suite's latency budget (settings.latency.suite_budget_s) is shared out by expected work, and what a cell
leaves unspent goes to the cells after it; the runner hands each cell its allowance as latency.budget_s."""
from __future__ import annotations

import pytest

import engine_fakes as fakes

from attnbench.engine import runner
from attnbench.engine.budget import SuiteBudget
from attnbench.core.results import read_rows


def test_allowance_follows_the_work_still_to_do():
    budget = SuiteBudget(10.0, {"a": 1.0, "b": 1.0, "c": 64.0}, max_s=6.0, floor_s=0.1)
    assert budget.allowance("a") == pytest.approx(1.0)        # 10 s × √1 / (√1 + √1 + √64)
    budget.spend("a", 0.2)                                     # certain early: 0.8 s left over
    assert budget.allowance("b") == pytest.approx(9.8 / 9)     # the left-over shared with b and c
    budget.spend("b", 9.8 / 9)
    assert budget.allowance("c") == pytest.approx(6.0)         # 8.71 s, capped at max_time_s
    budget.spend("c", 6.0)
    assert budget.pending == []


def test_a_spent_budget_still_gives_the_floor_and_unknown_work_counts_as_typical():
    budget = SuiteBudget(1.0, {"a": 16.0, "b": None, "c": 4.0}, max_s=10.0, floor_s=0.5)
    assert budget.weights["b"] == pytest.approx(10.0 ** 0.5)  # the median of the known ones, 10
    assert budget.weights["a"] == 4.0
    budget.spend("a", 5.0)
    assert budget.allowance("b") == 0.5 and budget.allowance("c") == 0.5


def test_runner_passes_each_cell_its_share(write_suite, tmp_path):
    suite = {
        "name": "budget",
        "attentions": [{"name": fakes.dotted("Tiny"), "label": "base"},
                       {"name": fakes.dotted("Tiny"), "label": "other", "config": {"scale": 2.0}}],
        "axes": {"resolution": [4, 8], "batch": [1], "device": ["cpu"], "pass": ["forward"]},
        "metrics": ["latency"],
        "baseline": "base",
        # each cell on its own (tests/engine/test_engine_shared_baseline.py replays a grouped run's budget)
        "settings": {"latency": {"suite_budget_s": 0.6, "max_time_s": 0.5, "min_repeats": 3, "min_epochs": 2,
                                 "warmup": 1, "epoch_s": 0.01, "shared_baseline": False}},
    }
    p = runner.plan(str(write_suite(suite)), out=str(tmp_path / "run"), cuda_available=False)
    assert set(p.work.values()) == {16 * 64, 64 * 64}  # the probe's cost model: H·W·dim², forward, batch 1
    runner.run(p, progress=False, isolate=False, argv=["test"])
    rows = read_rows(tmp_path / "run")
    # replay the budget with what each cell really spent: every row got exactly its share at its turn
    replay = SuiteBudget(0.6, {c.cell_id: runner._suite_budget(p).weights[c.cell_id] ** 2 for c in p.to_run},
                         max_s=0.5)
    for row in rows:
        assert row["latency_budget_s"] == pytest.approx(replay.allowance(row["cell_id"]))
        replay.spend(row["cell_id"], row["latency_spent_s"])
    by = {(r["label"], r["height"]): r for r in rows}
    # the paired 8x8 cell carries its own and its baseline's work: a larger share than the lone 4x4 baseline
    assert by[("other", 8)]["latency_budget_s"] >= by[("base", 4)]["latency_budget_s"]


@pytest.mark.slow  # worker processes, each importing torch: ~20-35 s on one loaded core; .ci/run runs it
def test_worker_processes_pool_their_epochs(write_suite, tmp_path):
    """settings.latency.processes = 2: the cell is timed again in a fresh process and the samples pooled, each
    process's epochs kept apart (so the interval carries the spread between processes)."""
    suite = {
        "name": "workers",
        "attentions": [{"name": fakes.dotted("Tiny"), "label": "base"},
                       {"name": fakes.dotted("Tiny"), "label": "other", "config": {"scale": 2.0}}],
        "axes": {"resolution": [4], "batch": [1], "device": ["cpu"], "pass": ["forward"]},
        "metrics": ["latency"],
        "baseline": "base",
        "settings": {"latency": {"processes": 2, "max_time_s": 0.4, "min_repeats": 3, "min_epochs": 2,
                                 "warmup": 1, "epoch_s": 0.01, "max_repeats": 40}},
    }
    p = runner.plan(str(write_suite(suite)), out=str(tmp_path / "run"), cuda_available=False)
    runner.run(p, progress=False, isolate=False, argv=["test"])
    rows = {r["label"]: r for r in read_rows(tmp_path / "run")}
    for row in rows.values():
        assert row["status"] == "ok" and row["latency_processes"] == 2
        assert len(row["latency_samples_ms"]) == sum(row["latency_epoch_sizes"]) == row["latency_n"]
        assert row["latency_stop"].count(",") == 1  # one stop reason per process
        assert row["latency_budget_s"] == pytest.approx(0.2)  # each process had half of max_time_s
    paired = rows["other"]
    assert len(paired["paired_ratios"]) == paired["latency_n"] and paired["paired_baseline"] == "base"
    assert paired["paired_ratio_low"] <= paired["paired_ratio"] <= paired["paired_ratio_high"]


def test_a_group_gets_its_cells_shares_within_their_floors_and_caps():
    budget = SuiteBudget(12.0, {"a": 1.0, "b": 1.0, "c": 4.0, "d": 16.0}, max_s=3.0, floor_s=1.0)
    # weights 1, 1, 2, 4: a and b together get 12 × 2/8 = 3 s; c and d together 9 s, capped at 2 × 3 s
    assert budget.allowance_for(["a", "b"]) == pytest.approx(3.0)
    assert budget.allowance_for(["c", "d"]) == pytest.approx(6.0)
    budget.spend_for(["c", "d"], 11.5)              # the group overran: 0.5 s left for a and b
    assert budget.allowance_for(["a", "b"]) == 2.0  # still the floor of each cell
    assert sorted(budget.pending) == ["a", "b"]
