"""Deterministic regression gate: params and FLOP counts of the built-in attentions must match the pinned file.

Any change fails, improvements included. If the change is intended, refresh the file with
``python -m attnbench.metrics.expected_costs`` and commit it with the change.
"""
import copy

import pytest

from attnbench.metrics import expected_costs as ec


@pytest.fixture(scope="module")
def actual():
    return ec.compute()


def test_costs_match_pinned_file(actual):
    expected = ec.load(ec.DEFAULT_PATH)
    lines = ec.diff(expected, actual)
    if lines:
        pytest.fail(
            f"{len(lines)} difference(s) from {ec.DEFAULT_PATH}:\n  " + "\n  ".join(lines)
            + f"\nIf intended, refresh with: {ec.REFRESH_COMMAND}",
            pytrace=False,
        )


def test_pinned_file_covers_every_builtin(actual):
    pinned = {case["attention"] for case in ec.load(ec.DEFAULT_PATH)["cases"].values()}
    assert pinned == set(ec._builtin_names())


def test_diff_reports_any_change_including_improvements(actual):
    key = next(iter(actual["cases"]))
    better = copy.deepcopy(actual)
    better["cases"][key]["macs_fvcore"] -= 1  # a "win" is still a change
    del better["cases"][next(k for k in actual["cases"] if k != key)]
    better["cases"]["new/x@1x1"] = {}
    lines = ec.diff(actual, better)
    assert any(line.startswith(f"{key}: macs_fvcore: expected") for line in lines)
    assert any("pinned but no longer computed" in line for line in lines)
    assert "new/x@1x1: new case, not pinned yet" in lines
    assert ec.diff(actual, copy.deepcopy(actual)) == []


def test_refresh_command_round_trip(tmp_path, actual, monkeypatch):
    monkeypatch.setattr(ec, "compute", lambda: actual)
    out = tmp_path / "expected.json"
    assert ec.main(["--out", str(out)]) == 0
    assert ec.diff(ec.load(out), actual) == []
    assert ec.main(["--out", str(out), "--check"]) == 0
