"""Failures loud and cheap (issue 19, item 2): a hanging user attention cost a 900 s time-out in every cell, a
deterministic error was re-run in every cell, `run` exited 0 with failed cells, and failed cells could not be
measured again."""
from __future__ import annotations

import io
import time

import pytest
from click.testing import CliRunner

import engine_fakes as fakes

from attnbench.engine import cell_budget, runner
from attnbench.suite.cells import Cell
from attnbench.cli import main
from attnbench.engine.failure_policy import REPEAT_STAGE, failure_kind, retryable_ids
from attnbench.engine.progress import CostEta, Progress
from attnbench.core.results import read_rows


def six_cells(attention: str, **overrides) -> dict:
    """One attention over 3 grids x 2 batches = 6 cells, forward only."""
    data = fakes.tiny_suite(attentions=[{"name": fakes.dotted(attention), "label": attention.lower()}],
                            baseline=attention.lower(), metrics=["shape"], **overrides)
    data["axes"].update(resolution=[4, 6, 8], batch=[1, 2], **{"pass": ["forward"]})
    return data


def start(path, out, **kw):
    return runner.run(runner.plan(str(path), out=str(out), cuda_available=False), progress=False, **kw)


@pytest.mark.slow  # two real time limits run out: ~20-35 s on one loaded core; .ci/run runs it
def test_a_hanging_user_attention_over_six_cells_costs_two_timeouts(fake_metrics, write_suite, tmp_path):
    """The done-when of the issue: the dotted-path attention runs isolated (the default), hangs in every cell; the
    first two cells time out, the other four are skipped with the reason, and the run exits 3."""
    path, out = write_suite(six_cells("Sleepy", settings={"timeout_s": 0.5})), tmp_path / "run"
    t0 = time.perf_counter()
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(out), "--no-progress"])
    elapsed = time.perf_counter() - t0
    assert result.exit_code == 3, result.output
    rows = read_rows(out)
    assert [r["status"] for r in rows] == ["failed"] * 2 + ["skipped"] * 4
    assert all(r["error"].startswith("CellTimeout") for r in rows[:2])
    assert {r["error_stage"] for r in rows[2:]} == {REPEAT_STAGE}
    assert rows[2]["error"].startswith("not measured: sleepy timed out in 2 cells already (last: CellTimeout")
    assert "settings.skip_repeated_failures: false" in rows[2]["error"]
    # two child start-ups (~3 s each here, more under load) and two 0.5 s limits; six would take three times that
    assert elapsed < 2 * (0.5 + execute_startup()) + 30
    assert "2 cell(s) failed (exit 3)" in result.output and "--retry-failed" in result.output


def execute_startup() -> float:
    from attnbench.engine.execute import IsolatedRunner

    return IsolatedRunner.STARTUP_S


def test_a_deterministic_error_stops_its_attention_after_two_cells_not_the_others(fake_metrics, write_suite,
                                                                                  tmp_path):
    data = six_cells("WrongShape")
    data["attentions"].append({"name": fakes.dotted("Tiny"), "label": "tiny"})
    start(write_suite(data), tmp_path / "run", isolate=False)
    rows = read_rows(tmp_path / "run")
    wrong = [r for r in rows if r["label"] == "wrongshape"]
    assert [r["status"] for r in wrong] == ["failed"] * 2 + ["skipped"] * 4
    assert wrong[2]["error"].startswith("not measured: wrongshape failed with ContractError at correctness in 2 cells")
    assert [r["status"] for r in rows if r["label"] == "tiny"] == ["ok"] * 6


def test_the_setting_turns_the_skipping_off(fake_metrics, write_suite, tmp_path):
    start(write_suite(six_cells("WrongShape", settings={"skip_repeated_failures": False})), tmp_path / "run",
          isolate=False)
    assert [r["status"] for r in read_rows(tmp_path / "run")] == ["failed"] * 6


def test_different_failures_do_not_stop_an_attention():
    assert failure_kind("failed", "ValueError: a", "build") != failure_kind("failed", "ValueError: a", "latency")
    assert failure_kind("failed", "CellTimeout: x", "correctness") == failure_kind("failed", "CellTimeout: y",
                                                                                   "timeout") == "timeout"
    assert failure_kind("oom", "OutOfMemoryError: x", "latency") is None  # a bigger cell may not fit; others may


def test_default_time_limit_follows_the_expected_cost_between_floor_and_ceiling(fake_metrics, write_suite):
    def cell(h, batch=1, pass_="forward", mode="eager", dtype="float32"):
        return Cell("s", "mhsa", "mhsa", {}, h, h, batch, dtype, "cpu", pass_, mode)

    small, big = cell(4), cell(112, batch=8, pass_="forward_backward")
    assert cell_budget.default_timeout(small, 10_000) == cell_budget.FLOOR_S  # covers a child's start-up
    assert cell_budget.default_timeout(big, 10**12) == cell_budget.CEILING_S
    mid = cell_budget.default_timeout(cell(28), 10**7)
    assert cell_budget.FLOOR_S < mid < cell_budget.CEILING_S
    assert cell_budget.default_timeout(cell(28, batch=4), 10**7) > mid
    assert cell_budget.default_timeout(cell(28, pass_="forward_backward"), 10**7) > mid
    assert cell_budget.default_timeout(cell(28), None) == cell_budget.CEILING_S  # no cost model: the old limit
    # the plan: each cell its own limit from the probe's MACs; settings.timeout_s fixes it; accuracy: none
    p = runner.plan(str(write_suite(six_cells("Tiny"))), cuda_available=False)
    assert set(p.timeouts.values()) == {cell_budget.FLOOR_S} and len(p.timeouts) == 6
    assert all(w and w > 0 for w in p.work.values())
    p = runner.plan(str(write_suite(six_cells("Tiny", settings={"timeout_s": 7}), "b.yaml")), cuda_available=False)
    assert set(p.timeouts.values()) == {7.0}


def test_retry_failed_measures_failed_and_repeat_skipped_cells_again(fake_metrics, write_suite, tmp_path):
    path, out = write_suite(fakes.tiny_suite()), tmp_path / "run"
    fakes.TRIPS["fail"] = 4
    start(path, out, isolate=False)
    first = read_rows(out)
    assert [r["status"] for r in first] == ["failed"] * 2 + ["skipped"] * 6
    assert len(retryable_ids(first)) == 8
    fakes.TRIPS.clear()  # "the fix"
    assert runner.plan(None, resume=str(out), cuda_available=False).to_run == []  # every status is final...
    p = runner.plan(None, resume=str(out), cuda_available=False, retry_failed=True)  # ...unless retried
    assert len(p.to_run) == 8
    runner.run(p, progress=False, isolate=False)
    rows = read_rows(out)
    latest = {r["cell_id"]: r["status"] for r in rows}
    assert len(rows) == 16 and set(latest.values()) == {"ok"} and retryable_ids(rows) == set()


def test_cli_exit_codes_for_failed_cells(fake_metrics, write_suite, tmp_path, monkeypatch):
    path = write_suite(six_cells("WrongShape"))
    cli = CliRunner()
    args = ["run", str(path), "--no-progress", "--no-isolate"]
    result = cli.invoke(main, args + ["--out", str(tmp_path / "a")])
    assert result.exit_code == 3, result.output
    result = cli.invoke(main, args + ["--out", str(tmp_path / "b"), "--allow-failures"])
    assert result.exit_code == 0, result.output
    result = cli.invoke(main, ["run", str(path), "--retry-failed"])
    assert result.exit_code == 2 and "--retry-failed" in result.output and "--resume RUN_DIR" in result.output
    ok = cli.invoke(main, ["run", str(write_suite(six_cells("Tiny"), "ok.yaml")), "--no-progress", "--no-isolate",
                           "--out", str(tmp_path / "c")])
    assert ok.exit_code == 0, ok.output


def test_progress_shows_the_running_cells_elapsed_time():
    stream = io.StringIO()
    bar = Progress(2, stream=stream, tty=False, tick_s=0.05)
    cell = Cell("s", "mhsa", "mhsa", {}, 4, 4, 1, "float32", "cpu", "forward", "eager")
    bar.start(cell)
    time.sleep(0.3)
    bar.finish(cell, "ok", None, 0.3)
    bar.close()
    assert "... still measuring mhsa 4x4 b1 float32 cpu fwd eager: 0s" in stream.getvalue()


def test_eta_weights_the_remaining_cells_by_work_and_counts_child_startups():
    # two sizes measured (1 s at 1 MMAC, 2 s at 4 MMAC): 1/3 s per MMAC over 2/3 s fixed; a 64 MMAC cell left
    eta = CostEta([1e6, 4e6, 64e6], [False] * 3)
    eta.observe(0, 1.0)
    eta.observe(1, 2.0)
    assert eta.remaining(2) == pytest.approx(2 / 3 + 64 / 3)  # the mean cell time would say 1.5 s
    # isolated cells not measured yet: each costs a child's start-up on top
    eta = CostEta([1e6, 4e6, 1e6], [False, False, True])
    eta.observe(0, 1.0)
    eta.observe(1, 2.0)
    assert eta.remaining(2) == pytest.approx(1.0 + 3.0)
