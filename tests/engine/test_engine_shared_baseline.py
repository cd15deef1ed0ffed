"""Shared-baseline groups in the runner (attnbench.engine.shared_baseline): the cells of one shape are timed together
against one series of baseline calls at the first cell's turn, the others take their columns when theirs comes,
the group gets its cells' budget shares, and a sibling that fails costs the others nothing."""
from __future__ import annotations

import pytest

import engine_fakes as fakes

from attnbench.engine import runner
from attnbench.engine.budget import SuiteBudget
from attnbench.core.results import read_rows

FAST = {"min_repeats": 3, "min_epochs": 2, "warmup": 1, "epoch_s": 0.005, "max_time_s": 0.3}


def _suite(extra, latency=None):
    return {
        "name": "groups",
        "attentions": [{"name": fakes.dotted("Tiny"), "label": "base"},
                       {"name": fakes.dotted("Tiny"), "label": "double", "config": {"scale": 2.0}},
                       *extra],
        "axes": {"resolution": [4, 8], "batch": [1], "device": ["cpu"], "pass": ["forward"]},
        "metrics": ["latency"],
        "baseline": "base",
        "settings": {"latency": {**FAST, **(latency or {})}},
    }


def _run(write_suite, tmp_path, suite):
    p = runner.plan(str(write_suite(suite)), out=str(tmp_path / "run"), cuda_available=False)
    runner.run(p, progress=False, isolate=False, argv=["test"])
    return p, {(r["label"], r["height"]): r for r in read_rows(tmp_path / "run")}


def test_one_baseline_series_serves_the_whole_shape(write_suite, tmp_path):
    suite = _suite([{"name": fakes.dotted("Tiny"), "label": "half", "config": {"scale": 0.5}}],
                   {"suite_budget_s": 1.2})
    p, rows = _run(write_suite, tmp_path, suite)
    assert all(r["status"] == "ok" for r in rows.values()) and len(rows) == 6
    for h in (4, 8):
        base, group = rows[("base", h)], [rows[(label, h)] for label in ("double", "half")]
        assert base["latency_group_size"] == 3 and "paired_ratio" not in base
        for row in group:
            assert row["latency_group_size"] == 3 and row["paired_baseline"] == "base"
            # paired round by round with the one baseline series the base cell's own row reports
            assert row["paired_rounds"] == sum(base["latency_epoch_sizes"]) // base["latency_per_round"]
            assert row["latency_group_spent_s"] == base["latency_group_spent_s"]
            assert row["latency_budget_s"] == base["latency_budget_s"]
        # every contender's own share of the sampling time adds up to the group's
        own = base["latency_spent_s"] + sum(r["latency_spent_s"] for r in group)
        assert own == pytest.approx(base["latency_group_spent_s"])
    # the group's allowance is its three cells' shares, granted at its first cell; the group's time is taken off
    weights = runner._suite_budget(p).weights
    replay = SuiteBudget(1.2, {c: w ** 2 for c, w in weights.items()}, max_s=0.3)
    for h in (4, 8):
        ids = [rows[(label, h)]["cell_id"] for label in ("base", "double", "half")]
        assert rows[("base", h)]["latency_budget_s"] == pytest.approx(replay.allowance_for(ids))
        replay.spend_for(ids, rows[("base", h)]["latency_group_spent_s"])


def test_the_baseline_rounds_pair_every_sibling(write_suite, tmp_path):
    _, rows = _run(write_suite, tmp_path, _suite([]))
    for h in (4, 8):
        base, double = rows[("base", h)], rows[("double", h)]
        # the baseline's per-round values are the ones the sibling's ratios were taken against
        assert len(double["paired_baseline_samples_ms"]) == len(double["paired_ratios"])
        assert double["paired_baseline_ms_median"] == pytest.approx(base["latency_ms_median"], rel=0.5)


def test_off_by_setting(write_suite, tmp_path):
    _, rows = _run(write_suite, tmp_path, _suite([], {"shared_baseline": False}))
    assert all("latency_group_size" not in r for r in rows.values())
    assert all("paired_ratio" in r for (label, _), r in rows.items() if label != "base")


def test_a_sibling_failing_its_gate_is_left_out_and_fails_in_its_own_cell(write_suite, tmp_path):
    _, rows = _run(write_suite, tmp_path, _suite([{"name": fakes.dotted("NaNAttention"), "label": "nan"}]))
    for h in (4, 8):
        assert rows[("base", h)]["status"] == "ok" and rows[("base", h)]["latency_group_size"] == 2
        assert rows[("double", h)]["latency_group_size"] == 2
        assert rows[("nan", h)]["status"] == "failed" and rows[("nan", h)]["error_stage"] == "correctness"


def test_a_sibling_failing_mid_rounds_sends_the_cell_back_alone_and_ends_grouping(write_suite, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setattr(fakes.FailsLater, "calls", 0)
    _, rows = _run(write_suite, tmp_path, _suite([{"name": fakes.dotted("FailsLater"), "label": "late"}]))
    first = min(rows.values(), key=lambda r: r["started_at"])
    assert first["label"] == "base" and first["height"] == 4
    # the grouped measurement failed on the sibling: the base cell was measured again alone, and no group formed
    assert first["status"] == "ok" and "latency_group_size" not in first
    assert all("latency_group_size" not in r for r in rows.values())
    assert rows[("double", 4)]["status"] == "ok" and "paired_ratio" in rows[("double", 4)]
    assert rows[("late", 4)]["status"] == "failed"
