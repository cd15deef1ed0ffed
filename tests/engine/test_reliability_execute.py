"""Wrong outputs and hanging cells (issue 10): an attention returning the wrong shape was recorded `ok` with
timings; a hanging cell held the sweep forever; a crashing dotted-path attention took the sweep down unless
--isolate was given."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

import engine_fakes as fakes

from attnbench.engine import execute, runner
from attnbench.cli import main
from attnbench.core.results import read_manifest, read_rows


def one_cell_suite(*attentions: str, **overrides) -> dict:
    data = fakes.tiny_suite(attentions=[{"name": fakes.dotted(a), "label": a.lower()} for a in attentions],
                            baseline=attentions[0].lower(), metrics=["shape"], **overrides)
    data["axes"].update(resolution=[4], batch=[1], **{"pass": ["forward"]})
    return data


def run(path, out, **kw):
    return runner.run(runner.plan(str(path), out=str(out), cuda_available=False), progress=False, **kw)


@pytest.mark.parametrize("attention, reason", [
    ("WrongShape", "output breaks the attention contract: shape (1, 3, 4, 8) (expected (1, 4, 4, 8) = (B, H, W, C))"),
    ("WrongDtype", "output breaks the attention contract: dtype float64 (expected float32)"),
])
def test_output_breaking_the_contract_fails_the_cell_with_the_reason(fake_metrics, write_suite, tmp_path,
                                                                     attention, reason):
    run(write_suite(one_cell_suite("Tiny", attention)), tmp_path / "run", isolate=False)
    ok, bad = read_rows(tmp_path / "run")
    assert ok["status"] == "ok" and ok["fake_tokens"] == 16
    assert (bad["status"], bad["error_stage"], bad["error"]) == ("failed", "correctness", f"ContractError: {reason}")
    assert "fake_tokens" not in bad and [c[0] for c in fakes.CALLS] == ["shape"]  # no metric ran on it


def test_contract_is_checked_even_when_the_gate_runs_no_forward(fake_metrics, write_suite, tmp_path, monkeypatch):
    monkeypatch.setattr(execute, "correctness_gate", lambda: (lambda ctx, module: None))
    run(write_suite(one_cell_suite("WrongShape")), tmp_path / "run", isolate=False)
    (row,) = read_rows(tmp_path / "run")
    assert row["status"] == "failed" and row["error"].startswith("ContractError: output breaks the attention")


def test_in_process_timeout_fails_the_hanging_cell_and_the_sweep_goes_on(fake_metrics, write_suite, tmp_path):
    data = one_cell_suite("Sleepy", "Tiny", settings={"timeout_s": 0.5})
    run(write_suite(data), tmp_path / "run", isolate=False)
    hung, ok = read_rows(tmp_path / "run")
    assert (hung["status"], hung["error_stage"]) == ("failed", "correctness")
    assert hung["error"] == "CellTimeout: the cell ran longer than its time limit of 0.5 s"
    assert ok["status"] == "ok"


@pytest.mark.slow  # a child importing torch, then a real time limit running out: ~5 s; .ci/run runs it
def test_isolated_timeout_kills_a_child_that_ignores_its_alarm(fake_metrics, write_suite, tmp_path, monkeypatch):
    monkeypatch.setattr(execute.IsolatedRunner, "STARTUP_S", 4.0)  # torch import in the child: ~3 s here
    run(write_suite(one_cell_suite("Stubborn", settings={"timeout_s": 0.5})), tmp_path / "run", isolate=True)
    (row,) = read_rows(tmp_path / "run")
    assert (row["status"], row["error_stage"]) == ("failed", "timeout")
    assert row["error"].startswith("CellTimeout: the cell ran longer than its time limit of 0.5 s (+4 s to start); "
                                   "its process was killed")


def test_timeout_setting_and_its_defaults(fake_metrics, write_suite):
    from attnbench.suite.schema import SuiteError
    from attnbench.suite.load import load_suite

    base = one_cell_suite("Tiny")
    assert runner.cell_timeout(load_suite(write_suite(base))) == runner.DEFAULT_TIMEOUT_S
    assert runner.cell_timeout(load_suite(write_suite({**base, "settings": {"timeout_s": None}}))) is None
    assert runner.cell_timeout(load_suite(write_suite({**base, "settings": {"timeout_s": 2}}))) == 2.0
    with pytest.raises(SuiteError, match=r"settings.timeout_s: expected a number, got 'soon' \(line \d+\)"):
        load_suite(write_suite({**base, "settings": {"timeout_s": "soon"}}))


@pytest.mark.slow  # a child process per cell, each importing torch: ~20-35 s on one loaded core; .ci/run runs it
def test_dotted_path_attentions_run_isolated_by_default(fake_metrics, write_suite, tmp_path):
    """A user attention that segfaults no longer takes the sweep down without --isolate."""
    path, out = write_suite(one_cell_suite("Crashy", "Tiny")), tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(out), "--no-progress", "--allow-failures"])
    assert result.exit_code == 0, result.output
    crashed, ok = read_rows(out)
    assert crashed["status"] == "failed" and "SIGSEGV" in crashed["error"] and ok["status"] == "ok"
    assert read_manifest(out)["options"]["isolate"] == "dotted-path attentions"
