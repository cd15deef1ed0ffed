"""The accuracy section of a report, from a hand-written run directory."""
from __future__ import annotations

import json

from attnbench.report.accuracy import accuracy_rows, accuracy_table, render_accuracy


def _row(label: str, top1: float, status: str = "ok", **extra) -> dict:
    return {"attention": label.split("-")[0], "label": label, "status": status, "acc_top1": top1, "acc_top5": 99.0,
            "acc_params": 21_500_000, "acc_epochs": 3, "acc_model": f"swap:tiny:{label}", "acc_dataset": "synthetic8@32",
            "acc_train_loss_final": 0.5, "acc_train_throughput_img_s": 100.0, "acc_loss_curve": [2.0, 1.0, 0.5],
            "acc_top1_curve": [10.0, 50.0, top1], "model_macs_fvcore": 2_654_000_000,
            "model_latency_ms_median": 12.5, **extra}


def write_run(path, rows, baseline="mhsa"):
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"suite": {"baseline": baseline}}))
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_table_has_deltas_against_the_baseline(tmp_path):
    run = write_run(tmp_path / "run", [
        _row("mhsa", 80.0), _row("dbra", 85.5), {"attention": "dat", "label": "dat", "status": "ok"},  # no accuracy
        _row("agent", 10.0, status="failed"), _row("mhsa", 81.0),  # a re-run cell: the last row counts
    ])
    rows = accuracy_rows([run])
    assert list(rows["label"]) == ["dbra", "mhsa"]
    table = accuracy_table(rows).set_index("attention")
    # rows without acc_val_n (older runs): no interval, the plain difference
    assert table.loc["mhsa", "top-1 (%) [95%]"] == "81.00"
    assert table.loc["mhsa", "Δ top-1 (pt) [95%]"] == "+0.00 pt (baseline)"
    assert table.loc["dbra", "Δ top-1 (pt) [95%]"] == "+4.50 pt" and table.loc["dbra", "val images"] == "—"
    assert table.loc["dbra", "params (M)"] == "21.50" and table.loc["dbra", "MMACs"] == "2654.0"


def test_render_writes_text_and_figures(tmp_path):
    run = write_run(tmp_path / "run", [_row("mhsa", 80.0), _row("bra", 90.0), _row("dbra", 85.0)])
    text, figures = render_accuracy([run], tmp_path / "out")
    assert "## Accuracy" in text and "| bra | swap:tiny:bra |" in text
    names = sorted(p.name for p in figures)
    assert names == sorted(f"accuracy_loss_curves.{e}" for e in ("png", "svg"))
    assert all(p.stat().st_size > 0 for p in figures)


def test_no_accuracy_rows_render_nothing(tmp_path):
    run = write_run(tmp_path / "run", [{"attention": "mhsa", "label": "mhsa", "status": "ok", "params": 1}])
    assert render_accuracy([run], tmp_path / "out") == ("", [])
