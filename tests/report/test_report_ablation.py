"""The ablation section: a planted effect (a toy attention whose cost doubles with ``work``) is reported as a clear
effect with its interval, an unchanged factor (``inert``) as "no clear effect", the reference row is marked, and a
run of one attention's variants gets the section instead of the competitor verdict."""
from __future__ import annotations

import numpy as np
import pytest

from attnbench.core import stats
from attnbench.report.ablation import ablation, effects
from attnbench.report.build import build_report, make_report
from attnbench.report.load import load_runs
from report_fixtures import cell_id, make_row, manifest, write_run

#: label -> (factor, value, true latency factor, MACs factor, memory factor, top-1 hits of 400)
PLANTED = {"toy": (None, None, 1.0, 1, 1.0, 240),
           "toy-work=2": ("work", 2, 2.0, 2, 2.0, 300),
           "toy-inert=2": ("inert", 2, 1.0, 1, 1.0, 244)}
VAL_IMAGES = 400


def planted_rows(rounds: int = 25, seed: int = 0) -> list[dict]:
    """Rows of the toy ablation at 8×8, forward, as the runner writes them: each variant's latency samples taken in
    rounds interleaved with the reference's (a shared slow-down per round, 2% jitter per call)."""
    rng = np.random.default_rng(seed)
    slow = np.exp(rng.normal(0.0, 0.3, rounds))
    ref_samples = 2.0 * slow * np.exp(rng.normal(0.0, 0.02, rounds))
    rows = []
    for label, (factor, value, lat, macs, mem, hits) in PLANTED.items():
        row = make_row("mhsa", 8, "forward", suite="toy_ablation")
        config = {"dim": 64, "num_heads": 2, "work": 1, "inert": 1, **({factor: value} if factor else {})}
        row.update(attention="toy", label=label, config=config, factor=factor, factor_value=value,
                   is_reference=factor is None, factor_reference="toy")
        row["cell_id"] = cell_id(row)
        samples = ref_samples if factor is None else 2.0 * lat * slow * np.exp(rng.normal(0.0, 0.02, rounds))
        row.update(latency_ms_median=float(np.median(samples)), latency_samples_ms=samples.tolist(),
                   latency_n=rounds, macs_fvcore=1_000_000 * macs, mem_peak_bytes=int(2**20 * mem),
                   params=16_640, acc_top1=100 * hits / VAL_IMAGES, acc_val_n=VAL_IMAGES)
        if factor is not None:
            ratio = stats.paired_ratio(samples, ref_samples)
            row.update(paired_baseline="toy", paired_ratio=ratio.estimate, paired_ratio_low=ratio.low,
                       paired_ratio_high=ratio.high)
        rows.append(row)
    return rows


@pytest.fixture
def planted_run(tmp_path):
    return write_run(tmp_path / "toy-run", planted_rows(), manifest("toy_ablation", baseline="toy"))


def test_the_planted_effect_is_clear_and_the_unchanged_factor_is_not(planted_run):
    report, frame, _ = make_report(load_runs([planted_run]))
    found = {(e.factor, e.metric): e for e in effects(frame)}
    work, inert = found[("work", "latency")], found[("inert", "latency")]
    assert work.clear and 1.9 < work.low <= work.change <= work.high < 2.1
    assert not inert.clear and inert.low <= 1 <= inert.high
    assert found[("work", "macs")].change == 2 and found[("inert", "macs")].change == 1
    # accuracy: 300/400 vs 240/400 is +15 points, Newcombe's interval [+8.5, +21.2]; 244/400 is +1 point, unclear
    acc = found[("work", "accuracy")]
    assert acc.clear and acc.change == pytest.approx(15.0)
    assert (acc.low, acc.high) == pytest.approx(tuple(100 * x for x in stats.proportion_diff_interval(
        300, 400, 240, 400)[1:]))
    assert not found[("inert", "accuracy")].clear

    section = report.ablation
    assert section is not None and section.replaces_verdict and report.verdict == []
    summary = section.summary[0]
    assert f"**latency**: clear effects from `work` (largest: 2 → {work.change:.2f}× [" in summary
    assert "no clear effect from `inert`; **peak memory**: changes with `work`" in summary
    assert "**MACs**: changes with `work` (largest: 2 → 2.00× at 8×8); no change from `inert`" in summary
    tables = {t.caption.split(" ")[0]: t for t in section.sections[0].tables}
    work_table, inert_table = tables["work"], tables["inert"]
    assert [row[0] for row in work_table.rows] == ["1 (reference)", "2"]
    assert work_table.bold[0][0] and not work_table.bold[1][0]   # the reference row is marked
    latency = work_table.header.index("latency 8×8 fwd")
    assert work_table.rows[1][latency] == f"{work.change:.2f}× [{work.low:.2f}–{work.high:.2f}]"
    assert inert_table.rows[1][latency].endswith(f"× [{inert.low:.2f}–{inert.high:.2f}] (no clear effect)")
    assert inert_table.rows[1][work_table.header.index("MACs 8×8")] == "1.00 M (same)"
    assert work_table.rows[0][work_table.header.index("top-1")] == "60.00 % [55.13–64.68]"  # Wilson, 240/400


def test_summary_and_page_open_with_the_ablation(planted_run, tmp_path):
    out = build_report([planted_run], tmp_path / "report")
    summary = (out / "summary.md").read_text()
    assert summary.index("## Ablation") < summary.index("## Figures") < summary.index("## Tables")
    assert "## Verdict" not in summary  # variants of one attention: no competitor verdict
    assert "| **1 (reference)** |" in summary and "no clear effect" in summary  # the reference row is bold
    html = (out / "index.html").read_text()
    assert html.index('id="ablation"') < html.index('id="tables"') and 'id="verdict"' not in html
    assert "figures/ablation_toy.svg" in html and (out / "figures" / "ablation_toy.svg").is_file()


def test_a_competitor_keeps_the_verdict_and_a_run_without_factors_has_no_section(tmp_path):
    rows = planted_rows()
    other = make_row("mhsa", 8, "forward", suite="toy_ablation")
    other.update(factor=None, factor_value=None, is_reference=False, factor_reference=None)
    run = write_run(tmp_path / "mixed", rows + [other], manifest("toy_ablation", baseline="mhsa"))
    report, _, _ = make_report(load_runs([run]))
    assert report.ablation is not None and not report.ablation.replaces_verdict and report.verdict
    plain = write_run(tmp_path / "plain", [make_row("mhsa", 8, "forward")], manifest())
    assert make_report(load_runs([plain]))[0].ablation is None
    assert ablation(make_report(load_runs([plain]))[1]) is None
