"""Fixtures for the report and compare tests (the rows themselves are built in report_fixtures.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from report_fixtures import fixture_rows, manifest, write_run


@pytest.fixture
def fixture_run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "fixture-run", fixture_rows(), manifest())
