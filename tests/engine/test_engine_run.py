"""Running cells: rows and manifest, interrupt + resume, OOM and failures, the correctness gate, --isolate,
--dry-run, crash-safe results files. Fake metrics and attentions (engine_fakes) keep these fast and independent."""
from __future__ import annotations

import collections
import datetime as dt
import json

import pytest
from click.testing import CliRunner

import engine_fakes as fakes

from attnbench.engine import runner
from attnbench.suite.cells import expand
from attnbench.cli import main
from attnbench.core.errors import UserError
from attnbench.core.results import ResultsWriter, read_manifest, read_rows
from attnbench.suite.load import load_suite

CONTRACT_HEAD = ["schema_version", "run_id", "cell_id", "suite", "attention", "label", "config", "height", "width",
                 "tokens", "batch", "dtype", "device", "pass", "mode", "status", "error", "error_stage", "started_at",
                 "duration_s"]


def start(suite_path, out, **kw) -> runner.Summary:
    p = runner.plan(str(suite_path), out=str(out), cuda_available=False, **kw)
    # the fakes are dotted-path attentions, isolated by default; these tests measure in this process
    return runner.run(p, progress=False, argv=["attnbench", "run", str(suite_path)], isolate=False)


def all_ids(suite_path) -> list[str]:
    return [c.cell_id for c in expand(load_suite(suite_path), cuda_available=False).cells]


def test_rows_and_manifest(fake_metrics, write_suite, tmp_path):
    path = write_suite(fakes.tiny_suite())
    summary = start(path, tmp_path / "run")
    rows = read_rows(tmp_path / "run")
    assert [r["cell_id"] for r in rows] == all_ids(path) and summary.counts == {"ok": 8}
    for row in rows:
        assert list(row)[: len(CONTRACT_HEAD)] == CONTRACT_HEAD
        assert row["status"] == "ok" and row["error"] is None and row["run_id"] == "run"
        assert row["fake_tokens"] == row["height"] * row["width"] == row["tokens"]
        assert row["fake_params"] == 8 * 8 + 8 and row["fake_trip"] == 1 and row["duration_s"] > 0
    manifest = read_manifest(tmp_path / "run")
    assert manifest["schema_version"] == 1 and manifest["run_id"] == "run"
    assert manifest["suite"] == load_suite(path).to_dict() and manifest["suite_path"] == str(path)
    assert manifest["versions"]["torch"] and manifest["cpu_model"] and isinstance(manifest["threads"], int)
    assert set(manifest["determinism"]) >= {"deterministic_algorithms", "cudnn_benchmark", "cuda_matmul_allow_tf32"}
    start_t, end_t = (dt.datetime.fromisoformat(manifest[k]) for k in ("started_at", "ended_at"))
    assert start_t <= end_t and manifest["counts"] == {"ok": 8} and manifest["interrupted"] is False
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["manifest.json", "results.jsonl"]


def test_interrupted_run_resumes_with_every_cell_exactly_once(fake_metrics, write_suite, tmp_path):
    path, run_dir = write_suite(fakes.tiny_suite()), tmp_path / "run"
    fakes.TRIPS["interrupt"] = 6  # the fifth cell is the first at 6x6
    summary = start(path, run_dir)
    assert summary.interrupted and summary.ran == 4
    assert [r["cell_id"] for r in read_rows(run_dir)] == all_ids(path)[:4]
    assert read_manifest(run_dir)["interrupted"] is True

    fakes.TRIPS.clear()
    p = runner.plan(None, resume=str(run_dir), cuda_available=False)
    assert [c.cell_id for c in p.to_run] == all_ids(path)[4:] and p.done == 4
    summary = runner.run(p, progress=False, argv=["resume"], isolate=False)
    ids = [r["cell_id"] for r in read_rows(run_dir)]
    assert collections.Counter(ids) == collections.Counter(all_ids(path))  # each exactly once
    manifest = read_manifest(run_dir)
    assert manifest["interrupted"] is False and manifest["counts"] == {"ok": 8}
    assert [r["argv"] for r in manifest["resumes"]] == [["resume"]] and manifest["resumes"][0]["ended_at"]
    # nothing is left to do
    assert runner.plan(str(path), resume=str(run_dir), cuda_available=False).to_run == []


def test_sigterm_stops_like_ctrl_c(fake_metrics, write_suite, tmp_path):
    fakes.TRIPS["term"] = 6
    summary = start(write_suite(fakes.tiny_suite()), tmp_path / "run")
    assert summary.interrupted and len(read_rows(tmp_path / "run")) == 4


def test_cli_interrupt_says_how_to_resume(fake_metrics, write_suite, tmp_path):
    fakes.TRIPS["interrupt"] = 4
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(write_suite(fakes.tiny_suite())), "--out", str(out),
                                       "--no-progress", "--no-isolate"])
    assert result.exit_code == 130
    assert f"attnbench run --resume {out}" in result.output


def test_cli_summary(fake_metrics, write_suite, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(write_suite(fakes.tiny_suite())), "--out", str(out),
                                       "--no-isolate"])
    assert result.exit_code == 0, result.output
    assert "8 ok, 0 failed, 0 oom, 0 skipped" in result.output
    assert f"next: attnbench report {out}" in result.output
    assert "[8/8] ok     tiny 6x6 b2 float32 cpu fwd+bwd eager" in result.output  # per-cell lines off a tty


def test_oom_is_recorded_and_the_sweep_goes_on(fake_metrics, write_suite, tmp_path):
    fakes.TRIPS["oom"] = 2
    start(write_suite(fakes.tiny_suite()), tmp_path / "run")
    rows = read_rows(tmp_path / "run")
    assert [r["status"] for r in rows] == ["ok", "ok", "oom", "oom"] * 2
    for row in rows[2:4] + rows[6:8]:
        assert row["error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 64.00 GiB"
        assert row["error_stage"] == "trip" and "fake_tokens" not in row  # no half-measured numbers


def test_exception_fails_the_cell_with_type_and_first_line(fake_metrics, write_suite, tmp_path):
    fakes.TRIPS["fail"] = 4
    summary = start(write_suite(fakes.tiny_suite(settings={"skip_repeated_failures": False})), tmp_path / "run")
    rows = read_rows(tmp_path / "run")
    assert [r["status"] for r in rows] == ["failed"] * 4 + ["ok"] * 4
    assert {r["error"] for r in rows[:4]} == {"ValueError: boom"}
    assert summary.counts == {"failed": 4, "ok": 4} and len(summary.problems) == 4


def test_nan_output_fails_at_the_gate_before_any_metric(fake_metrics, write_suite, tmp_path):
    data = fakes.tiny_suite(attentions=[{"name": fakes.dotted("NaNAttention"), "label": "nan"}], baseline="nan",
                            settings={"skip_repeated_failures": False})
    start(write_suite(data), tmp_path / "run")
    rows = read_rows(tmp_path / "run")
    assert len(rows) == 8 and fakes.CALLS == []
    for row in rows:
        assert row["status"] == "failed" and row["error_stage"] == "correctness"
        assert row["error"] == f"FloatingPointError: non-finite output: {row['tokens'] * row['batch'] * 8} of " \
                               f"{row['tokens'] * row['batch'] * 8} elements"
        assert not {"fake_tokens", "fake_trip"} & set(row)


def test_metric_column_may_not_overwrite_identity(fake_metrics, write_suite, tmp_path):
    start(write_suite(fakes.tiny_suite(metrics=["shape", "clash"], settings={"skip_repeated_failures": False})),
          tmp_path / "run")
    rows = read_rows(tmp_path / "run")
    assert {(r["status"], r["error_stage"], r["error"]) for r in rows} == {
        ("failed", "clash", "ValueError: metric 'clash' returned identity column(s) ['status']; rename them")}


def test_metrics_declaring_depends_on_run_once_per_key(fake_metrics, write_suite, tmp_path):
    start(write_suite(fakes.tiny_suite(metrics=["per_grid", "shape"])), tmp_path / "run")
    assert [c[1:3] for c in fakes.CALLS if c[0] == "per_grid"] == [(4, 4), (6, 6)]
    assert sum(c[0] == "shape" for c in fakes.CALLS) == 8
    assert all(r["fake_grid"] == f"{r['height']}x{r['width']}" for r in read_rows(tmp_path / "run"))


def test_skipped_cells_get_rows_and_dry_run_lists_them(fake_metrics, write_suite, tmp_path):
    data = fakes.tiny_suite(attentions=[{"name": fakes.dotted("Tiny"), "label": "tiny",
                                         "config": {"even_only": True}}])
    data["axes"]["resolution"] = [4, 5]
    path, out = write_suite(data), tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(out), "--dry-run", "--only", "pass=forward"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "suite tiny: 2 cells to run, 2 skipped, 0 excluded"
    assert lines[1].endswith("tiny 4x4 b1 float32 cpu fwd eager") and lines[3] == "skipped (not run):"
    assert lines[4].endswith("tiny 5x5 b1 float32 cpu fwd eager: tiny: H=5, W=5 must both be even")
    assert not out.exists()  # a dry run writes nothing
    start(path, out)
    rows = read_rows(out)
    assert [r["status"] for r in rows] == ["skipped"] * 4 + ["ok"] * 4  # skipped rows first, at no cost
    assert rows[0]["error"] == "tiny: H=5, W=5 must both be even" and rows[0]["error_stage"] == "probe"


def test_isolate_runs_cells_in_a_child_and_records_its_crash(fake_metrics, write_suite, tmp_path):
    data = fakes.tiny_suite(attentions=[{"name": fakes.dotted("Tiny"), "label": "tiny"},
                                        {"name": fakes.dotted("Crashy"), "label": "crashy"}], metrics=["shape"])
    data["axes"].update(resolution=[4], batch=[1], **{"pass": ["forward"]})
    p = runner.plan(str(write_suite(data)), out=str(tmp_path / "run"), cuda_available=False)
    runner.run(p, isolate=True, progress=False)
    ok, crashed = read_rows(tmp_path / "run")
    assert fakes.CALLS == []  # the metric ran in the children, not here
    assert (ok["status"], ok["fake_tokens"], ok["fake_params"]) == ("ok", 16, 72)
    assert crashed["status"] == "failed" and crashed["error_stage"] == "isolate"
    assert crashed["error"].startswith("ChildProcessError: the cell's process died from SIGSEGV (exit code -11)")


def test_results_survive_a_line_cut_short(tmp_path, write_suite, fake_metrics):
    path = write_suite(fakes.tiny_suite())
    start(path, tmp_path / "run")
    results = tmp_path / "run" / "results.jsonl"
    good = results.read_text().splitlines()
    results.write_text("\n".join(good[:3]) + "\n" + good[3][:40])  # a kill in the middle of the 4th write
    with pytest.warns(UserWarning, match="incomplete last line"):
        assert [r["cell_id"] for r in read_rows(tmp_path / "run")] == all_ids(path)[:3]
    with pytest.warns(UserWarning, match="dropping an incomplete last line"):
        writer = ResultsWriter(tmp_path / "run")
    writer.append(json.loads(good[3]))
    writer.close()
    assert results.read_text().splitlines() == good[:4]
    assert (tmp_path / "run" / "results.damaged.jsonl").read_text() == good[3][:40] + "\n"  # moved aside, not lost


def test_run_directory_guards(fake_metrics, write_suite, tmp_path):
    path = write_suite(fakes.tiny_suite())
    start(path, tmp_path / "run")
    with pytest.raises(UserError, match="already holds results; resume it with --resume"):
        runner.plan(str(path), out=str(tmp_path / "run"), cuda_available=False)
    with pytest.raises(UserError, match="give one of them"):
        runner.plan(str(path), out=str(tmp_path / "x"), resume=str(tmp_path / "run"))
    with pytest.raises(UserError, match="no manifest.json there"):
        runner.plan(None, resume=str(tmp_path), cuda_available=False)
    other = write_suite({**fakes.tiny_suite(), "name": "other"}, "other.yaml")
    with pytest.raises(UserError, match="that run is of suite 'tiny'"):
        runner.plan(str(other), resume=str(tmp_path / "run"), cuda_available=False)
