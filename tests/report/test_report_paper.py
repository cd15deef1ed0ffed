"""The paper table of a model suite, from synthetic rows: Δ% and the printed-digit match computed by hand, missing
published figures shown as —, the DeBiFormer-B discrepancy note, and where the table sits in summary.md and
index.html."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from attnbench.report import build_report, load_runs
from attnbench.report.derive import add_derived
from attnbench.report.paper import MATCH, MISMATCH, NONE, delta_pct, matches_printed, paper_table

from report_fixtures import fixture_rows, manifest, write_run

B_NOTE = "documented discrepancy: the README's 77 M / 11.8 G do not describe the official code"
# label -> (model, params, macs_fvcore, printed params, printed GFLOPs, note); None: nothing published
MODELS = {
    "DeBiFormer-T": ("debiformer_t", 21_495_598, 2_653_589_952, "21.4", "2.6", "the README truncates"),
    "DeBiFormer-B": ("debiformer_b", 95_496_020, 11_741_000_000, "77", "11.8", B_NOTE),
    "BiFormer-S": ("biformer_s", 25_536_000, 4_487_000_000, "25.5", "4.5", ""),
    "T-swap-dat": ("debiformer_t_swap_dat", 20_000_000, 3_000_000_000, None, None, None),
}
# label -> (forward batch, forward median ms, its 95% interval, forward_backward batch, training peak MiB)
TIMES = {"DeBiFormer-T": (8, 400.0, (380.0, 440.0), 2, 230.0), "DeBiFormer-B": (8, 1600.0, (1500.0, 1700.0), 2, 900.0),
         "BiFormer-S": (8, 800.0, (790.0, 820.0), 2, 400.0), "T-swap-dat": (8, 500.0, (480.0, 520.0), 2, 300.0)}


def _row(label: str, pass_: str) -> dict:
    model, params, macs, p_params, p_gflops, note = MODELS[label]
    batch_f, median, (low, high), batch_b, mib = TIMES[label]
    batch = batch_f if pass_ == "forward" else batch_b
    row = {"schema_version": 1, "run_id": "models-run", "suite": "models", "kind": "model", "attention": model,
           "label": label, "config": {}, "height": 224, "width": 224, "tokens": 224 * 224, "batch": batch,
           "dtype": "float32", "device": "cpu", "pass": pass_, "mode": "eager", "status": "ok", "error": None,
           "started_at": "2026-01-01T00:00:00Z", "duration_s": 1.0,
           "params": params, "params_trainable": params, "macs_fvcore": macs, "flops_torch": 2 * macs,
           "flops_uncounted_ops": ""}
    row["cell_id"] = hashlib.sha1(json.dumps([label, pass_]).encode()).hexdigest()[:12]
    if pass_ == "forward":
        # what the latency metric writes for a model cell: batch / seconds, the interval mapped through 1/x
        row.update(latency_ms_median=median, latency_ms_q1=median * 0.98, latency_ms_q3=median * 1.02,
                   latency_ms_iqr=median * 0.04, latency_ms_ci_low=low, latency_ms_ci_high=high, latency_n=5,
                   latency_samples_ms=[median] * 5, latency_noisy=False, threads=1,
                   throughput_img_s=batch / (median / 1e3), throughput_img_s_ci_low=batch / (high / 1e3),
                   throughput_img_s_ci_high=batch / (low / 1e3), mem_peak_bytes=int(50 * 2**20))
    else:
        row.update(latency_ms_median=3 * median, latency_ms_q1=3 * median, latency_ms_q3=3 * median,
                   latency_ms_iqr=0.0, latency_n=5, latency_samples_ms=[3 * median] * 5, latency_noisy=False,
                   threads=1, mem_peak_bytes=int(mib * 2**20))
    if p_params is not None:
        row.update(paper_name=label, paper_params_m=p_params, paper_gflops=p_gflops, paper_top1="81.9",
                   paper_throughput_img_s=None, paper_throughput_hardware=None, paper_source="README",
                   paper_note=note)
    return row


def _rows() -> list[dict]:
    return [_row(label, p) for label in MODELS for p in ("forward", "forward_backward")]


def _manifest() -> dict:
    m = manifest("models", baseline="DeBiFormer-T")
    m["suite"]["models"] = [{"name": MODELS[label][0], "label": label} for label in MODELS]
    return m


@pytest.fixture
def model_run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "models-run", _rows(), _manifest())


@pytest.fixture
def table(model_run):
    t, _ = paper_table(add_derived(load_runs([model_run])))
    return {row[0]: dict(zip(t.header, row)) | {"_cells": row} for row in t.rows}


@pytest.mark.parametrize("ours, printed, expected", [
    (21.495598, "21.5", True), (21.495598, "21.4", False),   # DeBiFormer-T params: rounded vs the README's cut
    (44.008, "44", True), (2.6535899, "2.7", True), (2.6535899, "2.6", False),
    (0.125, "0.13", True),                                   # half up, not half to even (0.12)
    (95.496, "77", False), (9.795, "9.8", True), (9.749, "9.8", False),
])
def test_matches_printed_rounds_half_up_to_the_printed_decimals(ours, printed, expected):
    assert matches_printed(ours, printed) is expected


def test_delta_pct_divides_by_the_printed_figure():
    assert delta_pct(21.495598, "21.4") == pytest.approx((21.495598 - 21.4) / 21.4 * 100)
    assert delta_pct(95.49602, "77") == pytest.approx(24.0208, abs=1e-4)


def test_params_and_gmacs_columns(table):
    t = table["DeBiFormer-T"]["_cells"]
    # params 21.496 vs 21.4: +0.447%, ✗ (rounds to 21.5); GMACs 2.6536 vs 2.6: +2.061%, ✗ (rounds to 2.7)
    assert t[1:5] == ["21.496", "21.4", "+0.45%", MISMATCH]
    assert t[5:9] == ["2.6536", "2.6", "+2.06%", MISMATCH]
    s = table["BiFormer-S"]["_cells"]
    assert s[1:5] == ["25.536", "25.5", "+0.14%", MATCH]            # 25.536 -> 25.5
    assert s[5:9] == ["4.4870", "4.5", "-0.29%", MATCH]             # 4.487 -> 4.5
    b = table["DeBiFormer-B"]["_cells"]
    assert b[1:5] == ["95.496", "77", "+24.02%", MISMATCH] and b[8] == MISMATCH


def test_missing_published_figures_show_a_dash(table):
    row = table["T-swap-dat"]["_cells"]
    assert row[1] == "20.000" and row[5] == "3.0000"                # ours still shown
    assert row[2:5] == [NONE, NONE, NONE] and row[6:9] == [NONE, NONE, NONE]
    assert table["T-swap-dat"]["paper top-1 (%)"] == NONE and table["T-swap-dat"]["paper img/s"] == NONE
    assert "nothing published" in table["T-swap-dat"]["note"]


def test_debiformer_b_note_states_the_discrepancy(table):
    assert table["DeBiFormer-B"]["note"] == B_NOTE
    assert table["BiFormer-S"]["note"] == ""


def test_throughput_and_training_memory_cells(table):
    # forward cell: 8 images / 0.4 s = 20 img/s, interval 8/0.44 .. 8/0.38; training memory from the fwd+bwd cell
    assert table["DeBiFormer-T"]["throughput (img/s) [95% CI]"] == "20.0 [18.2–21.1] (b8, cpu, 1 thread)"
    assert table["DeBiFormer-T"]["peak train memory (MiB)"] == "230 (b2, cpu)"
    assert table["DeBiFormer-B"]["throughput (img/s) [95% CI]"] == "5.00 [4.71–5.33] (b8, cpu, 1 thread)"


def test_report_shows_the_paper_table_first(model_run, tmp_path):
    out = build_report([model_run], tmp_path / "report", figures=False)
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert summary.index("## Paper table") < summary.index("## Verdict") < summary.index("## Tables")
    assert "Params match the printed digit for 1 of 3 published models (not: DeBiFormer-T, DeBiFormer-B" in summary
    assert "| DeBiFormer-T | 21.496 | 21.4 | +0.45% | ✗ |" in summary
    html = (out / "index.html").read_text(encoding="utf-8")
    assert '<section class="paper" id="paper">' in html and html.index('id="paper"') < html.index('id="verdict"')
    assert B_NOTE.replace("'", "&#39;") in html


def test_attention_runs_have_no_paper_table(tmp_path):
    run = write_run(tmp_path / "fixture-run", fixture_rows(), manifest())
    out = build_report([run], tmp_path / "report", figures=False)
    assert "Paper table" not in (out / "summary.md").read_text(encoding="utf-8")
    assert 'id="paper"' not in (out / "index.html").read_text(encoding="utf-8")
