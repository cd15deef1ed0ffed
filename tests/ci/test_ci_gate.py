"""The gate end to end on one cheap benchmark: an injected 2× slowdown is flagged, the counts are deterministic,
the JSON is pytest-benchmark's, and the CLI reports bad input in one line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from attnbench.ci import cases, gate, pbjson, verdicts
from attnbench.cli import main

CASE = "attention-mhsa-forward-14"  # ~0.4 ms a call on 2 CPU cores: many calls per 20 ms block


@pytest.fixture(scope="module")
def baseline_runs():
    return gate.run_gate(cases.select([CASE]), "cpu", rounds=12)


def test_injected_2x_slowdown_is_flagged_and_counts_are_repeatable(baseline_runs, monkeypatch):
    assert baseline_runs[0].error is None
    baseline = gate.baseline_document(baseline_runs, "cpu", 1)
    rerun = gate.run_gate(cases.select([CASE]), "cpu", rounds=12)
    rows = gate.compare_to_baseline(rerun, baseline, gate.DEFAULT_THRESHOLD, "cpu", 1)
    # FLOPs and memory are deterministic: an unchanged rerun matches exactly (the time is not asserted: noise)
    assert [r.verdict for r in rows if r.metric != "time"] == ["same", "same"]

    monkeypatch.setenv(cases.SLOWDOWN_ENV, f"{CASE}=2")
    slow = gate.run_gate(cases.select([CASE]), "cpu", rounds=12)
    rows = gate.compare_to_baseline(slow, baseline, gate.DEFAULT_THRESHOLD, "cpu", 1)
    time_row = next(r for r in rows if r.metric == "time")
    # the normalised time doubles; paired rounds against the reference keep it clear of the machine's load
    assert time_row.verdict == "slower", time_row
    assert 1.4 < time_row.ratio.estimate < 3.0
    assert verdicts.exit_code(rows) == 1


def test_gate_json_loads_with_pytest_benchmark_compare(baseline_runs, tmp_path):
    path = tmp_path / "gate.json"
    pbjson.write(path, pbjson.document(gate.gate_entries(baseline_runs), "cpu"))
    doc = json.loads(path.read_text())
    entry = doc["benchmarks"][0]
    assert entry["name"] == f"test_bench[{CASE}]"
    assert entry["stats"]["rounds"] == 12 and len(entry["stats"]["data"]) == 12
    assert entry["extra_info"]["flops"] > 0 and entry["extra_info"]["mem_peak_bytes"] > 0
    assert len(entry["extra_info"]["normalized"]) == 12
    res = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"test_bench[{CASE}]" in res.stdout


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    res = CliRunner().invoke(main, ["ci", "--only", "nope*", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "'nope*' matches no benchmark" in res.output
    res = CliRunner().invoke(main, ["ci", "--only", CASE, "--baseline", str(tmp_path / "none.json"),
                                    "--out", str(tmp_path)])
    assert res.exit_code == 2 and "not found" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["ci", "--base", "HEAD", "--update-baseline"])
    assert res.exit_code == 2 and "exclusive" in res.output
