"""Reading run directories: tolerance of a killed run, strictness elsewhere, the tidy frame's columns."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from attnbench.core.errors import UserError
from attnbench.core.results import ROW_HEAD
from attnbench.report.load import find_latest_run, load_runs, read_results, to_csv_frame

from report_fixtures import fixture_rows, make_row, manifest, write_run


def test_truncated_last_line_is_dropped_with_a_warning(tmp_path):
    run = write_run(tmp_path / "run", fixture_rows(), manifest())
    with open(run / "results.jsonl", "a") as f:
        f.write(json.dumps(make_row("mhsa", 8, "forward"))[:37])  # killed mid-append: no newline
    with pytest.warns(UserWarning, match=r"results\.jsonl:13: skipping an incomplete last line"):
        runs = load_runs([run])
    assert len(runs.frame) == 12
    assert set(runs.frame["label"]) == {"mhsa", "bra", "dbra"}


def test_corrupt_line_before_the_last_is_skipped_with_its_line_number(tmp_path):
    run = write_run(tmp_path / "run", fixture_rows()[:4], manifest())
    lines = (run / "results.jsonl").read_text().splitlines()
    lines[2] = lines[2][:20]
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"results\.jsonl: skipping 1 damaged line\(s\) \(line 3; line 3: not JSON"):
        rows = read_results(run / "results.jsonl")
    assert [r["label"] for r in rows] == [r["label"] for i, r in enumerate(fixture_rows()[:4]) if i != 2]


def test_missing_directory_and_empty_results_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        load_runs([tmp_path / "nope"])
    empty = write_run(tmp_path / "empty", [], manifest())
    with pytest.raises(UserError, match="no results in"):
        load_runs([empty])


def test_frame_has_contract_columns_in_order_and_missing_metrics_as_nan(tmp_path):
    rows = [{k: v for k, v in r.items() if not k.startswith("mem_")} for r in fixture_rows()]
    runs = load_runs([write_run(tmp_path / "run", rows, manifest())])
    frame = runs.frame
    assert list(frame.columns[: len(ROW_HEAD)]) == list(ROW_HEAD)
    assert frame["mem_peak_bytes"].isna().all()
    assert frame["params"].dtype == "Int64"
    ok = frame[frame["status"] == "ok"]
    assert ok["params"].notna().all() and frame.loc[frame["status"] != "ok", "params"].isna().all()
    assert "macs_analytic_attention" in frame.columns  # per-part columns are kept, after the contract's


def test_duplicate_cell_keeps_the_last_row_and_missing_manifest_warns(tmp_path):
    rows = fixture_rows()
    again = dict(rows[0], latency_ms_median=99.0)
    run = write_run(tmp_path / "run", rows + [again])
    with pytest.warns(UserWarning, match="manifest.json: missing"):
        runs = load_runs([run])
    assert len(runs.frame) == 12
    assert runs.frame.loc[runs.frame["cell_id"] == rows[0]["cell_id"], "latency_ms_median"].item() == 99.0
    assert runs.baseline(runs.frame["run_id"].iloc[0]) == "mhsa"  # the default without a manifest


def test_noisy_flag_is_computed_when_a_row_lacks_it(tmp_path):
    rows = fixture_rows()
    for row in rows:
        row.pop("latency_noisy", None)
    frame = load_runs([write_run(tmp_path / "run", rows, manifest())]).frame
    noisy = frame[frame["latency_noisy"]]
    assert list(zip(noisy["label"], noisy["height"], noisy["pass"])) == [("bra", 16, "forward")]


def test_csv_frame_serializes_lists_and_dicts_as_json(tmp_path):
    rows = fixture_rows()
    frame = to_csv_frame(load_runs([write_run(tmp_path / "run", rows, manifest())]).frame)
    assert json.loads(frame["latency_samples_ms"].iloc[0]) == rows[0]["latency_samples_ms"]
    assert json.loads(frame["config"].iloc[0]) == {"dim": 64, "num_heads": 2}
    assert pd.isna(frame.loc[frame["status"] != "ok", "latency_samples_ms"]).all()


def test_latest_run_is_the_most_recently_modified(tmp_path):
    older = write_run(tmp_path / "runs" / "a", fixture_rows(), manifest())
    newer = write_run(tmp_path / "runs" / "b", fixture_rows(), manifest())
    for path, t in ((older, 2_000_000_000), (newer, 1_000_000_000)):
        for f in (path / "results.jsonl", path / "manifest.json", path):
            os.utime(f, (t, t))
    assert find_latest_run(tmp_path / "runs") == older
    with pytest.raises(UserError, match=r"looked for .*nowhere/\*/results\.jsonl.*attnbench run"):
        find_latest_run(tmp_path / "nowhere")
