"""The Why part of the report: sentences for the losers, per-part and roofline tables, capacity table, figures."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from attnbench.report import why
from attnbench.report.build import build_report

from report_fixtures import fixture_rows, manifest, write_run

#: per attention: (dominant part, its time share, its MACs share)
DOMINANT = {"mhsa": ("attention", 0.7, 0.6), "bra": ("projections", 0.5, 0.4), "dbra": ("offsets_sampling_rpe", 0.58, 0.09)}


def _with_why_columns(rows: list[dict]) -> list[dict]:
    for row in rows:
        if row["status"] != "ok":
            continue
        part, share, macs = DOMINANT[row["attention"]]
        total = row["latency_ms_median"] * 1.2
        row.update({"breakdown_total_ms": total, f"breakdown_{part}_ms": share * total,
                    f"breakdown_{part}_share": share, f"breakdown_macs_share_{part}": macs,
                    "breakdown_other_ms": (1 - share) * total, "breakdown_other_share": 1 - share,
                    "breakdown_macs_share_other": 0.0, "breakdown_gflops": 5.0, "breakdown_intensity": 3.0,
                    f"breakdown_gflops_{part}": 8.0, f"breakdown_intensity_{part}": 10.0,
                    "capacity_budget_gib": 1 / 32, "capacity_step": 4, "capacity_limited_by": "budget",
                    "capacity_grid": {"mhsa": 100, "bra": 140, "dbra": 120}[row["attention"]],
                    "capacity_grid_predicted": {"mhsa": 101, "bra": 160, "dbra": 121}[row["attention"]],
                    "capacity_mem_exponent": 1.0,
                    "capacity_agree": row["attention"] != "bra",
                    "capacity_probes": [[14, 100_000], [28, 400_000], [56, 1_600_000], [112, 6_400_000]]})
    return rows


@pytest.fixture(scope="module")
def why_report(tmp_path_factory) -> Path:
    """One report (tables only) of a fixture run with breakdown and capacity columns, for every test here."""
    tmp = tmp_path_factory.mktemp("why")
    m = manifest()
    m["machine_peak"] = {"device": "cpu", "threads": 1, "fp32_gflops": 50.0, "bf16_gflops": 1.0, "copy_gbs": 10.0}
    run = write_run(tmp / "why-run", _with_why_columns(fixture_rows()), m)
    return build_report([run], tmp / "report", figures=False)


def test_why_sentences_name_the_dominant_part_of_each_loser(why_report):
    out = why_report
    summary = (out / "summary.md").read_text()
    assert "## Why" in summary
    # dbra loses at 8×8 forward (4 ms vs 2 ms): its dominant part and MACs share are named
    assert "**dbra** at 8×8 (forward, batch 1): 58% of its time in `offsets_sampling_rpe`, 9% of its MACs" in summary
    # the winner (mhsa at 8×8) gets no sentence there
    assert "**mhsa** at 8×8 (forward" not in summary
    # bra wins the forward+backward at 16×16 (24 ms vs 30 ms), so mhsa loses there and gets a sentence; in the
    # forward bra's noisy latency ties with mhsa: no loser, no sentence
    assert "**mhsa** at 16×16 (forward_backward, batch 1): 70% of its time in `attention`, 60% of its MACs " \
        "(1.2× the time of bra)." in summary
    assert "**mhsa** at 16×16 (forward," not in summary
    html = (out / "index.html").read_text()
    assert 'id="why"' in html and "offsets_sampling_rpe" in html


def test_roofline_uses_the_probed_peak(why_report):
    out = why_report
    summary = (out / "summary.md").read_text()
    assert "5.00 (10% of peak), AI 3.00" in summary  # 5 GFLOP/s of a 50 GFLOP/s matmul peak


def test_capacity_table_and_the_reason_when_prediction_disagrees(why_report):
    out = why_report
    summary = (out / "summary.md").read_text()
    assert "Largest square token grid within 32 MiB" in summary
    assert "| bra | 140² (pred. 160²) * |" in summary
    assert "| bra · forward · batch 1 | 140² | 160² | peak memory is not one power law" in summary
    assert "| mhsa · forward · batch 1 |" not in summary  # agrees: no note


def test_why_figures_are_drawn(why_report, tmp_path):
    from attnbench.report.load import load_runs
    from attnbench.report.build import make_report

    runs = load_runs([why_report.parent / "why-run"])
    _, frame, _ = make_report(runs)
    figures = why.render_why_figures(frame, tmp_path, runs.manifests)
    assert [f.name for f in figures] == ["why_parts", "why_roofline", "why_capacity"]
    for fig in figures:
        assert (tmp_path / fig.svg).stat().st_size > 1000
    assert figures[2].title == "Largest grid within 32 MiB"


def test_no_why_without_breakdown_rows(fixture_run, tmp_path):
    out = build_report([fixture_run], tmp_path / "report", figures=False)
    assert "## Why" not in (out / "summary.md").read_text()


def test_dominant_part_picks_the_largest_time_share():
    row = pd.Series({"breakdown_attention_share": 0.2, "breakdown_other_share": 0.5, "breakdown_lce_share": 0.3,
                     "breakdown_macs_share_other": 0.0})
    assert why.dominant_part(row) == ("other", 0.5, 0.0)
