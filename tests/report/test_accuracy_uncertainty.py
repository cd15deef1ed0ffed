"""Accuracy in the report with its uncertainty: indistinguishable attentions are a tie everywhere (tables, verdict,
Pareto text), a planted 10-point difference on 1,000 images is called, seeds fold into mean and spread."""
from __future__ import annotations

import pytest

from acc_fixtures import acc_row, correct_bits, write_acc_run
from attnbench.report.acc_uncertainty import compare, estimates
from attnbench.report.build import build_report, make_report
from attnbench.report.load import load_runs

#: the issue's Fashion-MNIST sweep: five attentions within a point on 1,000 validation images
CLOSE = {"mhsa": 84.1, "bra": 84.1, "dat": 83.9, "agent": 84.7, "dbra": 84.0}
#: agent 10 points above the rest
PLANTED = {"mhsa": 74.1, "bra": 74.1, "dat": 73.9, "agent": 84.1, "dbra": 74.0}


def _report(tmp_path, rows):
    run = write_acc_run(tmp_path / "run", rows)
    report, frame, _ = make_report(load_runs([run]))
    return run, report, frame


def _verdict(report):
    """The verdict's "which attention is most accurate" table."""
    return next(s for s in report.verdict if s.key == "accuracy").tables[0]


def _table(report):
    """The accuracy section's table (one per run): attention -> (top-1 cell, Δ top-1 cell)."""
    table = next(s for s in report.sections if s.key == "accuracy").tables[0]
    top1, delta = table.header.index("top-1 (%) [95%]"), table.header.index("Δ top-1 (pt) [95%]")
    return table, {r[0]: (r[top1], r[delta]) for r in table.rows}


def _rows(top1: dict, paired: bool = True, n: int = 1000) -> list[dict]:
    bits = correct_bits(top1, n)
    return [acc_row(label, b) if paired else {**acc_row(label, b), "acc_top1_correct": None}
            for label, b in bits.items()]


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "unpaired-old-rows"])
def test_five_attentions_within_a_point_are_indistinguishable(tmp_path, paired):
    run, report, frame = _report(tmp_path, _rows(CLOSE, paired))
    # the table: no bold anywhere, every difference marked a tie, intervals shown
    table, cells = _table(report)
    assert not table.numeric and not any(table.is_bold(i, j) for i in range(len(table.rows))
                                         for j in range(len(table.header)))
    # Wilson for 847/1000 by hand: (847 + z²/2)/(1000 + z²) ± z/(1000 + z²)·√(847·153/1000 + z²/4)
    # = 84.57 ± 2.23
    assert cells["agent"][0] == "84.70 [82.34–86.80]"
    assert cells["agent"][1].startswith("+0.60 pt [") and cells["agent"][1].endswith(", tie")
    assert all(cells[n][1].endswith("tie") for n in ("bra", "dat", "dbra"))
    # the verdict: one tie of all five
    verdict = _verdict(report).rows
    assert len(verdict) == 1 and verdict[0][0].endswith("(tie: indistinguishable)")
    assert set(verdict[0][0].split(" (")[0].split(" ≈ ")) == set(CLOSE)
    assert verdict[0][1] == ("paired test" if paired else "interval")
    # the Pareto text: a tie, and the front is just the cheapest (agent is also the cheapest by latency)
    notes = {line.split(" (run")[0]: line for line in report.verdict_notes}
    assert "a tie" in notes["Accuracy vs model_latency_ms_median"]
    assert "indistinguishable" in notes["Accuracy vs model_latency_ms_median"]
    assert notes["Accuracy vs model_macs_fvcore"].endswith("the cheapest is dbra (84.00 %, 250 M MACs).")
    # the summary says so too
    out = build_report([run], tmp_path / "out", figures=False)
    summary = (out / "summary.md").read_text()
    assert "tie: indistinguishable" in summary and "**" not in summary.split("## Accuracy")[1]
    assert "| agent |" in summary and "+0.60 pt [" in summary


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "unpaired-old-rows"])
def test_a_planted_ten_point_difference_is_called(tmp_path, paired):
    run, report, frame = _report(tmp_path, _rows(PLANTED, paired))
    found = estimates(frame)
    d = compare(found["agent"], found["mhsa"])
    assert d.method == ("paired" if paired else "unpaired") and not d.tie
    assert d.diff == pytest.approx(10.0) and 0 < d.low < 10 < d.high
    if paired:
        assert d.p_value < 1e-6  # McNemar on the discordant images
    verdict = _verdict(report).rows
    assert verdict[0][0] == "agent (+10.00 pt vs the baseline)"
    _, cells = _table(report)
    assert cells["agent"][1].startswith("+10.00 pt [") and "tie" not in cells["agent"][1]
    # the other three are within 0.2 points of the baseline: ties
    assert all(cells[n][1].endswith(", tie") for n in ("bra", "dat", "dbra"))
    notes = {line.split(" (run")[0]: line for line in report.verdict_notes}
    # by latency agent is cheapest and best: alone on the front; by MACs dbra (cheapest) → agent
    assert "tie" not in notes["Accuracy vs model_latency_ms_median"]
    assert "is agent (84.10 %" in notes["Accuracy vs model_latency_ms_median"]
    assert "is dbra (74.00 %, 250 M MACs) → agent (84.10 %, 320 M MACs)" in notes["Accuracy vs model_macs_fvcore"]


def test_paired_test_sees_what_the_unpaired_interval_cannot(tmp_path):
    """3 points on 1,000 images with strongly agreeing classifiers: the unpaired interval holds 0, the paired one
    (on the same images) does not."""
    bits = correct_bits({"mhsa": 84.0, "agent": 87.0}, agreement=40.0)
    paired = estimates(load_runs([write_acc_run(tmp_path / "p", [acc_row(k, b) for k, b in bits.items()])]).frame
                       .assign(series=lambda f: f["label"]))
    d = compare(paired["agent"], paired["mhsa"])
    assert d.method == "paired" and not d.tie and d.p_value < 0.05
    rows = [{**acc_row(k, b), "acc_top1_correct": None} for k, b in bits.items()]
    unpaired = estimates(load_runs([write_acc_run(tmp_path / "u", rows)]).frame.assign(series=lambda f: f["label"]))
    d = compare(unpaired["agent"], unpaired["mhsa"])
    assert d.method == "unpaired" and d.tie


def test_rows_without_validation_size_compare_exactly(tmp_path):
    rows = [acc_row(label, None, top1=v) for label, v in CLOSE.items()]
    _, report, _ = _report(tmp_path, rows)
    _, cells = _table(report)
    assert cells["agent"] == ("84.70", "+0.60 pt")  # no validation size: no interval, no tie claimed
    assert _verdict(report).rows[0][0].startswith("agent (+0.60 pt")


def _seed_rows(per_seed: dict[str, list[float]]) -> list[dict]:
    rows = []
    for seed in range(3):
        bits = correct_bits({k: v[seed] for k, v in per_seed.items()}, seed=seed)
        rows += [acc_row(label, b, seed=seed) for label, b in bits.items()]
    return rows


def test_seeds_give_mean_spread_and_per_seed_values(tmp_path):
    per_seed = {"mhsa": [81.0, 80.0, 82.0], "agent": [84.0, 78.0, 90.0]}
    run, report, frame = _report(tmp_path, _seed_rows(per_seed))
    found = estimates(frame)
    assert found["agent"].per_seed == {0: 84.0, 1: 78.0, 2: 90.0}
    assert found["agent"].mean == pytest.approx(84.0) and found["agent"].std == pytest.approx(6.0)
    # the image-level comparison alone (pooled over the three seeds' paired tables) would call +3 points...
    d = compare(found["agent"], found["mhsa"])
    assert d.method == "paired" and d.low > 0
    # ...but the seed-to-seed spread (Welch over the per-seed values) holds 0: a tie
    assert d.seed_low < 0 < d.seed_high and d.tie
    _, cells = _table(report)
    assert cells["agent"][0].startswith("84.00 ± 6.00 sd, 3 seeds (84.00, 78.00, 90.00) [")
    assert cells["agent"][1].endswith(", tie")
    out = build_report([run], tmp_path / "out", figures=False)
    summary = (out / "summary.md").read_text()
    assert "84.00 ± 6.00 sd, 3 seeds (84.00, 78.00, 90.00)" in summary
    assert "| agent ≈ mhsa (tie: indistinguishable) | paired test + seed spread |" in summary


def test_accuracy_figure_draws_the_intervals(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.container import ErrorbarContainer

    from attnbench.report import figures

    run, report, frame = _report(tmp_path, _rows(CLOSE))
    ok = figures._plain(frame[frame["status"] == "ok"])
    look = figures._look(figures.series_styles(list(ok["series"])), ok, ok.iloc[:0])
    fig, title, text = figures._pareto_plot("latency_ms_median", "latency")(ok, look)
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 5 and "95% intervals" in text
    # the y axis spans the intervals (about ±2.3 points), not just the 83.9–84.7 of the values
    low, high = fig.axes[0].get_ylim()
    assert low < 82 and high > 86.5
    # with every accuracy tied, the dashed front is the cheapest attention alone
    front = [line for line in fig.axes[0].lines if line.get_linestyle() == "--"]
    assert len(front) == 1 and len(front[0].get_xdata()) == 1
