"""Tests of the CI benchmark machinery. Tests marked ``slow`` here run only when ``-m`` selects them
(``python3 -m pytest -q -m slow tests/ci``), as the README promises for the whole suite."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents and item.get_closest_marker("slow"):
            item.add_marker(skip)


_MACHINE_INFO: dict = {}


@pytest.fixture(autouse=True)
def machine_info_read_once(monkeypatch):
    """pytest-benchmark's machine_info runs py-cpuinfo in a fresh interpreter (~2 s a call); the machine does not
    change within a session, so it is read once and every caller (attnbench.ci.pbjson) gets its own copy."""
    from pytest_benchmark import plugin

    real = plugin.pytest_benchmark_generate_machine_info

    def once():
        if not _MACHINE_INFO:
            _MACHINE_INFO.update(real())
        return copy.deepcopy(_MACHINE_INFO)

    monkeypatch.setattr(plugin, "pytest_benchmark_generate_machine_info", once)
