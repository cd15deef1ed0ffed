"""One noisy rule everywhere: the metric's flag, the report's and the precision line agree, by the interval the
reader uses (the ratio's for a paired cell, the median's otherwise); preemption is judged from CPU vs wall time."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from attnbench.core import uncertainty
from attnbench.metrics.latency import finish_row, summarize, summarize_paired
from attnbench.report.load import load_runs

sys.path.insert(0, str(Path(__file__).parent / "report"))
from report_fixtures import make_row, write_run  # noqa: E402


def _paired_row(a, b, sizes):
    row = make_row("bra", 8, "forward")
    row.update(summarize(a, epoch_sizes=sizes))
    row.update(summarize_paired(a, b, [False] * len(a), [False] * len(b), sizes), paired_baseline="mhsa")
    return row


def test_paired_cell_is_judged_by_its_ratio():
    # the machine swings 30% between epochs: the median alone is uncertain, the ratio (exactly 2) is not
    slow = [1.0] * 6 + [1.3] * 6 + [1.0] * 6
    row = finish_row(_paired_row([2.0 * f for f in slow], [1.0 * f for f in slow], [6, 6, 6]), 0.10)
    assert row["latency_noisy"] is False and row["latency_rel_ci"] == pytest.approx(0.0)
    median_only = {k: v for k, v in row.items() if not k.startswith("paired_")}
    assert uncertainty.is_noisy(median_only)  # the same samples read as an absolute time are noisy


def test_report_and_metric_use_the_same_rule(tmp_path):
    slow = [1.0] * 6 + [1.3] * 6 + [1.0] * 6
    certain = finish_row(_paired_row([2.0 * f for f in slow], [1.0 * f for f in slow], [6, 6, 6]), 0.10)
    uncertain = finish_row(_paired_row([2.0 * f for f in slow], [1.0] * 18, [6, 6, 6]), 0.10)
    legacy = make_row("mhsa", 8, "forward")       # an old row: its stored flag says noisy, its interval does not
    legacy.update(latency_noisy=True, latency_ms_ci_low=1.96, latency_ms_ci_high=2.04)
    uncertain["cell_id"], legacy["cell_id"] = "u1", "l1"
    with pytest.warns(UserWarning, match="manifest.json: missing"):
        frame = load_runs([write_run(tmp_path / "run", [certain, uncertain, legacy])]).frame
    flags = {c: bool(f) for c, f in zip(frame["cell_id"], frame["latency_noisy"])}
    assert flags[certain["cell_id"]] == certain["latency_noisy"] is False
    assert flags["u1"] == uncertain["latency_noisy"] is True
    assert flags["l1"] is False and uncertainty.is_noisy(legacy) is False


def test_noisy_threshold_is_the_rows_own():
    row = {"latency_ms_median": 10.0, "latency_ms_ci_low": 9.4, "latency_ms_ci_high": 10.6, "latency_n": 30,
           "latency_n_used": 30}
    assert not uncertainty.is_noisy(row)                           # ±6% under the default ±10%
    assert uncertainty.is_noisy({**row, "latency_noisy_rel_ci": 0.05})
    assert uncertainty.noisy_reason({**row, "latency_n_used": 3}) == "3 clean samples < 5"
    assert uncertainty.reading_interval({"status": "failed"}) is None


@pytest.mark.parametrize("wall, cpu, expected", [
    (1.0, 1.0, False), (1.0, 0.95, False), (1.0, 0.85, True), (1.0, None, False), (0.0, 0.0, False),
    (1.0, math.nan, False),
])
def test_preempted(wall, cpu, expected):
    assert uncertainty.preempted(wall, cpu) is expected


def test_clean_samples_and_ratios():
    row = {"latency_samples_ms": [1.0, 9.0, 1.1], "latency_preempted_mask": [False, True, False],
           "paired_ratios": [2.0, 0.3, 2.1], "paired_preempted_mask": [False, True, False]}
    assert uncertainty.clean_samples(row) == [1.0, 1.1]
    assert uncertainty.clean_ratios(row) == [2.0, 2.1]
    assert uncertainty.clean_samples({"latency_samples_ms": [1.0, 2.0]}) == [1.0, 2.0]  # old rows: all


def test_report_says_how_many_cells_reached_their_target(tmp_path):
    from attnbench.report.derive import add_derived
    from attnbench.report.headline import precision_notes

    rows = []
    for i, (stop, wide) in enumerate([("target", False), ("target", False), ("budget", False), ("budget", True)]):
        row = make_row("bra", 8, "forward")
        row.update(cell_id=f"c{i}", latency_stop=stop, latency_target_rel_ci=0.03, latency_ms_median=2.0,
                   latency_ms_ci_low=1.95,
                   latency_ms_ci_high=2.6 if wide else 2.05)
        rows.append(row)
    with pytest.warns(UserWarning, match="manifest.json: missing"):
        runs = load_runs([write_run(tmp_path / "run", rows)])
    (note,) = precision_notes(add_derived(runs), runs)
    # the third cell stopped at the budget (its shared-baseline group went on) with an interval of ±2.5%: reached
    assert note.startswith("Run `fixture-run`: 3 of 4 latency cells reached their ±3% interval; 1 stopped at their budget "
                           "first (1 of them noisy); 1 of 4 cells noisy in all")


def test_reached_target_reads_the_interval_not_the_stop_reason():
    row = {"latency_ms_median": 2.0, "latency_ms_ci_low": 1.95, "latency_ms_ci_high": 2.05, "latency_n": 20,
           "latency_target_rel_ci": 0.03, "latency_stop": "budget"}
    assert uncertainty.reached_target(row)                                  # ±2.5%: reached, though budget-stopped
    assert not uncertainty.reached_target({**row, "latency_target_rel_ci": 0.02})
    assert not uncertainty.reached_target({**row, "latency_ms_ci_high": 2.2, "latency_stop": "target"})
    paired = {**row, "paired_ratio": 0.5, "paired_ratio_low": 0.45, "paired_ratio_high": 0.55}
    assert not uncertainty.reached_target(paired)                           # the ratio's ±10% is what counts
    assert uncertainty.reached_target({"latency_stop": "target"})           # no interval: the stop reason says
