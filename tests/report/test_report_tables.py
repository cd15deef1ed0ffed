"""Derived columns and summary tables: baseline ratios checked against hand computations from the fixture."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attnbench.report import load_runs, make_report
from attnbench.report.derive import add_derived
from attnbench.report.figures import pareto_front
from attnbench.report.tables import fmt_count, fmt_num

from report_fixtures import fixture_rows, manifest, write_run


def _cell(frame: pd.DataFrame, label: str, size: int, pass_: str, column: str):
    hit = frame[(frame["label"] == label) & (frame["height"] == size) & (frame["pass"] == pass_)]
    assert len(hit) == 1
    return hit[column].item()


def _sections(report) -> dict[str, dict[str, dict[str, dict[str, str]]]]:
    """section title -> table caption -> row name -> column -> cell text."""
    return {s.title: {t.caption: {r[0]: dict(zip(t.header[1:], r[1:])) for r in t.rows} for t in s.tables}
            for s in report.sections}


def test_ratios_and_achieved_gflops_match_hand_computation(fixture_run):
    frame = add_derived(load_runs([fixture_run]))
    # latency: bra 8 ms vs mhsa 10 ms at 16×16 forward; dbra 12 ms vs 6 ms at 8×8 forward_backward
    assert _cell(frame, "bra", 16, "forward", "latency_ms_median_ratio") == pytest.approx(0.8)
    assert _cell(frame, "dbra", 8, "forward_backward", "latency_ms_median_ratio") == pytest.approx(2.0)
    # counts are matched on H×W only: dbra 1.0 M / mhsa 2.0 M at 8×8, whatever the pass
    assert _cell(frame, "dbra", 8, "forward_backward", "macs_fvcore_ratio") == pytest.approx(0.5)
    assert _cell(frame, "bra", 8, "forward", "macs_torch") == 1_500_000  # flops_torch / 2
    # achieved = 2 · 16e6 MACs · batch 1 · k / latency: 3.2 GFLOP/s forward (10 ms) and forward_backward (k=3, 30 ms)
    assert _cell(frame, "mhsa", 16, "forward", "achieved_gflops_s") == pytest.approx(3.2)
    assert _cell(frame, "mhsa", 16, "forward_backward", "achieved_gflops_s") == pytest.approx(3.2)
    assert _cell(frame, "bra", 16, "forward_backward", "achieved_gflops_s") == pytest.approx(2 * 6e6 * 3 / 24e-3 / 1e9)
    assert np.isnan(_cell(frame, "dbra", 16, "forward", "latency_ms_median_ratio"))  # failed cell: no ratio


def test_summary_tables_show_values_ratios_statuses_and_noise(fixture_run):
    report, *_ = make_report(load_runs([fixture_run]))
    sections = _sections(report)
    fwd, bwd = "forward · batch 1 · float32 · cpu · eager", "forward_backward · batch 1 · float32 · cpu · eager"
    latency = sections["Latency (ms, median [q1–q3])"]
    assert list(latency[fwd]) == ["mhsa", "bra", "dbra"]  # the baseline first
    assert latency[fwd]["bra"] == {"8×8": "3.00 [2.88–3.12] (1.50× [1.38–1.63])",
                                   "16×16": "~8.00 [6.00–10.0] (≈1× tie [0.58–1.04])"}
    assert latency[fwd]["dbra"]["16×16"] == "failed"
    assert latency[bwd]["dbra"]["16×16"] == "oom"
    assert latency[bwd]["mhsa"]["16×16"] == "30.0 [28.8–31.2] (1.00×)"
    memory = sections["Peak memory (MiB)"]
    assert memory[fwd]["bra"]["16×16"] == "4.00 (0.50×)"
    assert memory[bwd]["bra"]["8×8"] == "5.00 (1.25×)"
    counts = "batch 1, forward (counts do not depend on the batch or the pass)"
    assert sections["Parameters"][counts]["dbra"]["8×8"] == "20.8 k (1.25×)"
    assert sections["MACs (fvcore)"][counts]["bra"]["8×8"] == "1.50 M (0.75×)"
    assert sections["MACs (torch FlopCounterMode)"][counts]["mhsa"]["16×16"] == "16.0 M (1.00×)"
    assert sections["Achieved GFLOP/s"][fwd]["mhsa"]["16×16"] == "3.20 (1.00×)"
    assert [r[-2:] for r in report.missing.rows] == [
        ["failed", "RuntimeError: non-finite output"], ["oom", "OutOfMemoryError: CUDA out of memory"]]
    assert report.uncounted == {"bra": "aten::topk", "dbra": "aten::topk"}


def test_baseline_comes_from_the_manifest_and_may_name_an_attention(tmp_path):
    run = write_run(tmp_path / "bra-base", fixture_rows(), manifest(baseline="bra"))
    frame = add_derived(load_runs([run]))
    assert _cell(frame, "mhsa", 16, "forward", "latency_ms_median_ratio") == pytest.approx(10 / 8)
    # a baseline given as the attention name matches the one label built from it
    rows = [dict(r, label="mhsa-wide") if r["attention"] == "mhsa" else r for r in fixture_rows()]
    frame = add_derived(load_runs([write_run(tmp_path / "label", rows, manifest())]))
    assert frame.loc[frame["is_baseline"], "label"].unique().tolist() == ["mhsa-wide"]
    assert _cell(frame, "bra", 16, "forward", "latency_ms_median_ratio") == pytest.approx(0.8)


def test_missing_baseline_gives_no_ratios_and_says_so(tmp_path):
    run = write_run(tmp_path / "nobase", fixture_rows(), manifest(baseline="agent"))
    report, frame, _ = make_report(load_runs([run]))
    assert frame["latency_ms_median_ratio"].isna().all()
    assert "baseline `agent` is not in run `fixture-run`" in report.baseline_note


def test_two_runs_get_distinct_series_and_their_own_baseline(tmp_path):
    a = write_run(tmp_path / "a", fixture_rows(run_id="run-a"), manifest())
    slow = [dict(r, latency_ms_median=r["latency_ms_median"] * 2) if r["status"] == "ok" else r
            for r in fixture_rows(run_id="run-b")]
    b = write_run(tmp_path / "b", slow, manifest())
    frame = add_derived(load_runs([a, b]))
    # the part of the run ids that differs names the run (issue 19: the whole id overflowed the tables)
    assert set(frame["series"]) == {f"{n} ({r})" for n in ("mhsa", "bra", "dbra") for r in "ab"}
    ratios = frame[(frame["label"] == "bra") & (frame["height"] == 16) & (frame["pass"] == "forward")]
    assert ratios["latency_ms_median_ratio"].tolist() == pytest.approx([0.8, 0.8])


def test_accuracy_gets_a_table_with_differences_in_points(tmp_path):
    acc = {"mhsa": 70.0, "bra": 72.5, "dbra": 74.25}
    rows = [dict(r, acc_top1=acc[r["label"]]) if r["status"] == "ok" else r for r in fixture_rows()]
    report, *_ = make_report(load_runs([write_run(tmp_path / "acc", rows, manifest())]))
    # one row per attention, not per H×W (issue 19): the trained model's accuracy, Δ against the baseline
    table = _sections(report)["Accuracy (%)"]["after the last epoch"]
    # rows without a validation size: no interval to show, the difference in points
    assert (table["bra"]["top-1 (%) [95%]"], table["bra"]["Δ top-1 (pt) [95%]"]) == ("72.50", "+2.50 pt")
    assert (table["dbra"]["top-1 (%) [95%]"], table["dbra"]["Δ top-1 (pt) [95%]"]) == ("74.25", "+4.25 pt")


def test_pareto_front_by_hand():
    cost = [1.0, 2.0, 2.0, 3.0, 4.0, 0.5]
    acc = [70.0, 75.0, 74.0, 73.0, 80.0, 60.0]
    # 0.5→60 (cheapest), 1→70, 2→75 beats 2→74, 3→73 is dominated by 2→75, 4→80
    assert pareto_front(np.array(cost), np.array(acc)).tolist() == [True, True, False, False, True, True]


@pytest.mark.parametrize("value, text", [(16_640, "16.6 k"), (2.654e9, "2.65 G"), (512, "512"), (0, "0.00")])
def test_fmt_count(value, text):
    assert fmt_count(value) == text


@pytest.mark.parametrize("value, text", [(1234.5, "1234"), (12.34, "12.3"), (1.0, "1.00"), (0.5, "0.500"),
                                         (0.01234, "0.0123"), (float("nan"), "—")])
def test_fmt_num(value, text):
    assert fmt_num(value) == text


def test_attentions_table_names_each_label_and_its_config(tmp_path):
    rows = [dict(r, config={"dim": 64, "topk": 4}) if r["label"] == "bra" else r for r in fixture_rows()]
    report, *_ = make_report(load_runs([write_run(tmp_path / "run", rows, manifest(baseline="bra"))]))
    assert report.attentions.rows == [["bra", "bra", '{"dim": 64, "topk": 4}'],
                                      ["mhsa", "mhsa", '{"dim": 64, "num_heads": 2}'],
                                      ["dbra", "dbra", '{"dim": 64, "num_heads": 2}']]
