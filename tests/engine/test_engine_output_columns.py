"""A smoke-suite run writes exactly the committed column set (``tests/fixtures/smoke_columns.txt``).

The list was taken from a full ``attnbench run suites/smoke.yaml --device cpu`` before the package was regrouped
(issue 18); a refactor must not add, drop or rename a column. Two cells suffice: the baseline's row (no ``paired_*``
columns) and one paired row carry every column the ten cells write together. A change that *means* to alter the
format updates the list in the same commit.
"""
from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from attnbench.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "suites" / "smoke.yaml"
COLUMNS = ROOT / "tests" / "fixtures" / "smoke_columns.txt"


def test_smoke_run_writes_the_committed_columns(tmp_path):
    from attnbench.core.results import read_rows

    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(SMOKE), "--out", str(out), "--device", "cpu", "--no-progress",
                                       "--only", "pass=forward,attention=mhsa|dbra"])
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert sorted(r["attention"] for r in rows) == ["dbra", "mhsa"]
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    expected = set(COLUMNS.read_text(encoding="utf-8").split())
    written = set().union(*rows)
    assert written == expected, (f"new: {sorted(written - expected)}; gone: {sorted(expected - written)}")
