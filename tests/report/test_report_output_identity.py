"""The report of a committed run directory is byte-identical to its committed Markdown.

``tests/fixtures/verdict_run`` is a real run of ``suite.yaml`` beside it (4 attentions, 14 and 28 token grids, CPU),
committed before the package was regrouped (issue 18) so that refactors can show the report did not change. When a
change is *meant* to alter the report, regenerate ``expected_report.md`` with::

    python3 tests/report/test_report_output_identity.py

and say in the commit why the text changed.
"""
from __future__ import annotations

from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "verdict_run"
EXPECTED = FIXTURE / "expected_report.md"


def verdict_and_tables() -> str:
    """The summary's ``## Verdict`` and ``## Tables`` parts (the environment part names this machine)."""
    from attnbench.report.build import make_report
    from attnbench.report.load import load_runs
    from attnbench.report.markdown import render_summary

    report, _frame, _missing = make_report(load_runs([FIXTURE]))
    text = render_summary(report)
    start, end = text.index("## Verdict"), text.index("## Environment")
    return text[start:end]


def test_fixture_run_report_is_unchanged():
    got = verdict_and_tables()
    assert "### Which attention is cheapest at each resolution" in got and "### Latency" in got
    assert got == EXPECTED.read_text(encoding="utf-8")


if __name__ == "__main__":
    EXPECTED.write_text(verdict_and_tables(), encoding="utf-8")
