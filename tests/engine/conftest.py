"""Fixtures of the engine tests: fake metrics and gate, suites written to tmp files, and one smoke-suite run."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import engine_fakes as fakes

from attnbench.engine import execute
from attnbench import metrics
from attnbench.cli import main

SMOKE = Path(__file__).resolve().parents[2] / "suites" / "smoke.yaml"


@pytest.fixture
def fake_metrics(monkeypatch):
    """The metric table holds only the fake metrics, and the gate is the fake one."""
    monkeypatch.setattr(metrics, "METRICS", {name: f"_fake_{name}" for name in fakes.FAKE_METRICS})
    monkeypatch.setattr(metrics, "get_metric", lambda name: fakes.FAKE_METRICS[name])
    monkeypatch.setattr(execute, "correctness_gate", lambda: fakes.check_finite)
    monkeypatch.setattr(fakes, "TRIPS", {})
    fakes.CALLS.clear()
    return fakes


@pytest.fixture
def write_suite(tmp_path: Path):
    """write_suite(data or text, name) -> path of a suite file under tmp_path."""

    def write(data, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
        return path

    return write


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """(CLI result, run directory) of ``attnbench run SUITE --device cpu`` on suites/smoke.yaml with its latency
    sampling budget cut from 8 s to 1 s (the columns and pairing do not depend on it): real attentions and metrics,
    shared by the tests that read such a run."""
    root = tmp_path_factory.mktemp("smoke")
    suite = yaml.safe_load(SMOKE.read_text(encoding="utf-8"))
    assert suite["settings"]["latency"]["suite_budget_s"] == 8  # what the cut below is from
    suite["settings"]["latency"].update(suite_budget_s=1, max_time_s=0.2)
    path = root / "smoke.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    out = root / "smoke-run"
    return CliRunner().invoke(main, ["run", str(path), "--out", str(out), "--device", "cpu"]), out
