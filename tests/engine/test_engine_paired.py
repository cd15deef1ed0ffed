"""The runner pairs each cell with the suite baseline's cell of the same shape for the latency metric, records the
machine load with every row and in the manifest, lists excluded cells, and refuses a --only that matches nothing."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

import engine_fakes as fakes

from attnbench.engine import runner
from attnbench.cli import main
from attnbench.core.results import read_manifest, read_rows

FAST = {"warmup": 1, "min_time_s": 0.0, "min_repeats": 6, "max_repeats": 6, "min_block_s": 0.0}


def paired_suite() -> dict:
    return {
        "name": "paired",
        "attentions": [{"name": fakes.dotted("Tiny"), "label": "base"},
                       {"name": fakes.dotted("Tiny"), "label": "double", "config": {"scale": 2.0}}],
        "axes": {"resolution": [4, 6], "batch": [1], "device": ["cpu"], "pass": ["forward", "forward_backward"]},
        "exclude": [{"label": "base", "resolution": 6}],
        "metrics": ["latency"],
        "baseline": "base",
        "settings": {"latency": FAST},
    }


def _run(path, out, **kw):
    p = runner.plan(str(path), out=str(out), cuda_available=False, **kw)
    # in-process: a child per cell costs a torch import each; test_isolated_cells_are_paired_too covers isolation
    return runner.run(p, isolate=False, progress=False, argv=["attnbench", "run", str(path)])


def test_cells_are_paired_with_the_baseline_at_their_shape(write_suite, tmp_path, cpu_flushes_denormals):
    path = write_suite(paired_suite())
    _run(path, tmp_path / "run")
    rows = {(r["label"], r["height"], r["pass"]): r for r in read_rows(tmp_path / "run")}
    assert set(rows) == {("base", 4, "forward"), ("base", 4, "forward_backward"), ("double", 4, "forward"),
                         ("double", 4, "forward_backward"), ("double", 6, "forward"), ("double", 6, "forward_backward")}
    for pass_ in ("forward", "forward_backward"):
        paired = rows[("double", 4, pass_)]
        assert paired["paired_baseline"] == "base" and paired["paired_rounds"] == 6
        # samples per round follow the probe's timing (2 when it saw one call over 2.25x the other): not fixed
        assert len(paired["paired_ratios"]) == 6 and paired["latency_n"] == 6 * paired["latency_per_round"]
        assert paired["paired_ratio_low"] <= paired["paired_ratio"] <= paired["paired_ratio_high"]
        assert "paired_ratio" not in rows[("base", 4, pass_)]       # the baseline is not paired with itself
        assert "paired_ratio" not in rows[("double", 6, pass_)]     # its baseline cell is excluded: timed alone
    for row in rows.values():
        assert {"load_before", "load_after", "busy_before", "busy_after", "steal_s", "cpu_count"} <= set(row)
        assert row["flush_denormal"] is cpu_flushes_denormals and row["latency_stop"] == "max_repeats"
    manifest = read_manifest(tmp_path / "run")
    assert manifest["load"]["cells"] == 6 and isinstance(manifest["load"]["under_load"], bool)
    assert set(manifest["load_at_start"]) == {"load", "busy", "steal"}
    excluded = manifest["cells"]["excluded_cells"]
    assert [(e["label"], e["height"], e["pass"]) for e in excluded] == [("base", 6, "forward"),
                                                                      ("base", 6, "forward_backward")]
    assert all("exclude entry 0" in e["reason"] for e in excluded)


def test_only_keeps_pairing_with_a_baseline_it_filters_out(write_suite, tmp_path):
    path = write_suite(paired_suite())
    _run(path, tmp_path / "run", only="label=double,resolution=4,pass=forward")
    (row,) = read_rows(tmp_path / "run")
    assert row["label"] == "double" and row["paired_baseline"] == "base"


@pytest.mark.slow  # a child process importing torch: ~4-5 s; .ci/run runs it
def test_isolated_cells_are_paired_too(write_suite, tmp_path):
    path = write_suite(paired_suite())
    p = runner.plan(str(path), out=str(tmp_path / "run"), cuda_available=False,
                    only="label=double,resolution=4,pass=forward")
    runner.run(p, isolate=True, progress=False, argv=["attnbench"])
    (row,) = read_rows(tmp_path / "run")
    assert row["status"] == "ok", row["error"]
    assert row["paired_baseline"] == "base" and row["paired_rounds"] == 6


@pytest.mark.parametrize("only", ["label=nothing", "resolution=99"])
def test_only_matching_no_cell_is_an_error(write_suite, tmp_path, only):
    path = write_suite(paired_suite())
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(tmp_path / "run"), "--only", only])
    assert result.exit_code == 2, result.output
    assert "matches none of the suite's cells" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / "results.jsonl").exists()


@pytest.mark.slow  # a local submitit job (its own processes, a torch import): ~5 s; .ci/run runs it
def test_batch_jobs_pair_cells_and_record_load(write_suite, tmp_path):
    from attnbench.engine.executors.submit import run_with_executor

    suite = dict(paired_suite(), executor={"cells_per_job": 4, "poll_s": 0.2})
    path = write_suite(suite)
    p = runner.plan(str(path), out=str(tmp_path / "run"), cuda_available=False, only="resolution=4,pass=forward")
    run_with_executor(p, "local", None, progress=False, argv=["test"])
    rows = {r["label"]: r for r in read_rows(tmp_path / "run")}
    assert rows["double"]["paired_baseline"] == "base" and rows["double"]["paired_rounds"] == 6
    assert "paired_ratio" not in rows["base"]
    assert all("load_before" in r and "busy_after" in r for r in rows.values())
