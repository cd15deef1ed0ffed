"""Issue 19 #9: `attnbench report runs/A runs/B` appended the whole run id to every label, and the verdict table
overflowed; the series now carry only the part of the run id that tells the runs apart."""
from __future__ import annotations

from attnbench.report import load_runs, make_report
from attnbench.report.derive import run_tags
from attnbench.report.markdown import render_summary

from report_fixtures import power_law_rows, synthetic_manifest, write_run

A, B = "resolution_sweep-20261206-101010", "resolution_sweep-20261206-113030"


def test_run_tags_keep_only_the_parts_that_differ():
    assert run_tags([A, B]) == {A: "101010", B: "113030"}
    assert run_tags(["smoke-20261206-101010", "my-sweep-20261206-101010"]) == {
        "smoke-20261206-101010": "smoke", "my-sweep-20261206-101010": "my-sweep"}
    assert run_tags(["x-20261205-101010", "x-20261206-101010"]) == {
        "x-20261205-101010": "20261205", "x-20261206-101010": "20261206"}
    long_names = ["a-very-long-suite-name-one-1", "a-very-long-suite-name-two-1"]
    assert run_tags(long_names) == {n: n.split("-")[-2] for n in long_names}
    too_long = ["x-" + "a" * 20, "x-" + "b" * 20]
    assert run_tags(too_long) == {n: n for n in too_long}  # nothing short tells them apart: the ids


def test_two_runs_report_short_series_names(tmp_path):
    dirs = []
    for run_id in (A, B):
        rows = power_law_rows(run_id=run_id, suite="resolution_sweep")
        dirs.append(write_run(tmp_path / run_id, rows, synthetic_manifest(rows)))
    report, frame, _ = make_report(load_runs(dirs))
    assert set(frame["series"]) == {f"{label} ({tag})" for label in ("mhsa", "agent", "bra", "dbra-topk8")
                                    for tag in ("101010", "113030")}
    summary = render_summary(report)
    assert f"mhsa ({A})" not in summary and "mhsa (101010)" in summary
    assert f"baseline `mhsa (101010)` in run `{A}`" in summary  # where the tag is spelled out
    cells = [c.strip() for line in summary.splitlines() if line.startswith("|") for c in line.split("|")]
    assert max(len(c) for c in cells) <= 80, max(cells, key=len)  # four series with full ids: ~170
