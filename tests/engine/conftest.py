"""Fixtures of the engine tests: fake metrics and gate, and suites written to tmp files."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import engine_fakes as fakes

from attnbench.engine import execute
from attnbench import metrics


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

