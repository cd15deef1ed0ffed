"""A smoke-suite run writes exactly the committed column set (``tests/fixtures/smoke_columns.txt``).

The list was taken from a full ``attnbench run suites/smoke.yaml --device cpu`` before the package was regrouped
(issue 18); a refactor must not add, drop or rename a column. The ten cells of the smoke run the engine tests share
(``smoke_run`` in tests/engine/conftest.py) write together exactly these columns (the baseline's row has no
``paired_*`` columns, a paired row has them). A change that *means* to alter the format updates the list in the same
commit.
"""
from __future__ import annotations

from pathlib import Path

from attnbench.core.results import read_rows

COLUMNS = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "smoke_columns.txt"


def test_smoke_run_writes_the_committed_columns(smoke_run):
    result, out = smoke_run
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert len(rows) == 10 and {r["paired_baseline"] for r in rows if "paired_baseline" in r} == {"mhsa"}
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    expected = set(COLUMNS.read_text(encoding="utf-8").split())
    written = set().union(*rows)
    assert written == expected, (f"new: {sorted(written - expected)}; gone: {sorted(expected - written)}")
