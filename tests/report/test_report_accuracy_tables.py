"""Accuracy rows in their own tables (issue 19, item 8): top-1 appeared under "56x56 · forward · batch 1" (the
attention-level axis) though training was at 32 px, and empty metric tables appeared for an accuracy-only suite."""
from __future__ import annotations

from report_fixtures import cell_id, fixture_rows, manifest, write_run

from attnbench.report.build import make_report
from attnbench.report.load import load_runs


def accuracy_rows(run_id: str = "acc-run", with_img_size: bool = True) -> list[dict]:
    rows = []
    for attention, top1 in (("mhsa", 50.0), ("dbra", 55.5)):
        row = {"schema_version": 1, "run_id": run_id, "suite": "acc", "attention": attention, "label": attention,
               "config": {"dim": 64, "num_heads": 2}, "height": 56, "width": 56, "tokens": 56 * 56, "batch": 1,
               "dtype": "float32", "device": "cpu", "pass": "forward", "mode": "eager", "status": "ok",
               "error": None, "error_stage": None, "started_at": "2026-01-01T00:00:00Z", "duration_s": 100.0,
               "acc_top1": top1, "acc_top5": 90.0, "acc_epochs": 3, "acc_model": f"swap:tiny:{attention}",
               "acc_dataset": "imagenette@32", "acc_params": 1_000_000, "model_macs_fvcore": 1e8,
               "model_latency_ms_median": 3.0}
        if with_img_size:
            row["acc_img_size"] = 32
        row["cell_id"] = cell_id(row)
        rows.append(row)
    return rows


def test_an_accuracy_only_run_has_one_accuracy_table_by_model_not_by_grid(tmp_path):
    rep, _, _ = make_report(load_runs([write_run(tmp_path / "acc-run", accuracy_rows(), manifest("acc"))]))
    assert [s.key for s in rep.sections] == ["accuracy"]  # no empty latency/memory/params tables
    (table,) = rep.sections[0].tables
    assert "56×56" not in table.header and "forward" not in table.caption
    row = dict(zip(table.header, table.rows[1]))
    assert (row["attention"], row["model"], row["img_size"], row["epochs"]) == ("dbra", "swap:tiny:dbra", "32", "3")
    assert (row["top-1 (%) [95%]"], row["Δ top-1 (pt) [95%]"]) == ("55.50", "+5.50 pt")  # no val size: no interval


def test_rows_from_before_the_img_size_column_take_it_from_the_dataset_label(tmp_path):
    rows = accuracy_rows(with_img_size=False)
    rep, _, _ = make_report(load_runs([write_run(tmp_path / "acc-run", rows, manifest("acc"))]))
    table = rep.sections[0].tables[0]
    assert {dict(zip(table.header, r))["img_size"] for r in table.rows} == {"32"}


def test_attention_metrics_keep_their_tables_and_accuracy_leaves_them(tmp_path):
    rows = fixture_rows()
    rep, _, _ = make_report(load_runs([write_run(tmp_path / "fixture-run", rows, manifest())]))
    keys = [s.key for s in rep.sections]
    assert "latency" in keys and "memory" in keys and "accuracy" not in keys
    assert not any(s.key.startswith("acc_") for s in rep.sections)
    for section in rep.sections:
        for table in section.tables:  # no table of dashes only
            assert any(cell not in ("", "—") for r in table.rows for cell in r[1:]), (section.key, table.caption)
