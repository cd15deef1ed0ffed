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
    """(CLI result, run directory) of ``attnbench run suites/smoke.yaml --device cpu``: real attentions and metrics,
    ~10 s on 2 cores, so the tests that read such a run share this one."""
    out = tmp_path_factory.mktemp("smoke") / "smoke-run"
    return CliRunner().invoke(main, ["run", str(SMOKE), "--out", str(out), "--device", "cpu"]), out
