"""tests/kernels/plain_runner.py, the GPU check's correctness stage where pytest is not installed: it runs the same
test functions, expands parametrize, honours skips, and reports a failing test as failed (exit 1)."""
from __future__ import annotations

import os
import subprocess
import sys

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plain_runner.py")

SAMPLE = '''
import pytest

pytestmark = pytest.mark.triton


@pytest.mark.parametrize("a, b", [(1, 2), (3, 4)])
@pytest.mark.parametrize("scale", [10, 20], ids=["x10", "x20"])
def test_grid(a, b, scale):
    assert (a + b) * scale in (30, 60, 70, 140)


def test_fails():
    assert 1 == 2, "one is not two"


@pytest.mark.skipif(True, reason="never here")
def test_skipped():
    raise AssertionError


@pytest.mark.slow
def test_slow():
    raise AssertionError


def test_skip_inside():
    pytest.skip("decided at run time")


def test_raises_and_fixtures(tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="bad v"):
        raise ValueError("bad value")
    monkeypatch.setenv("PLAIN_RUNNER_PROBE", "1")
    assert os.environ["PLAIN_RUNNER_PROBE"] == "1"
    print("hello")
    assert capsys.readouterr().out == "hello\\n" and tmp_path.is_dir()


def test_unknown_fixture(request):
    raise AssertionError


import os  # noqa: E402
'''


def test_plain_runner_runs_marks_and_reports_failures(tmp_path):
    path = tmp_path / "test_sample.py"
    path.write_text(SAMPLE)
    res = subprocess.run([sys.executable, RUNNER, "--shim", str(path), "--exclude", "x20-3-4"],
                         capture_output=True, text=True, timeout=300)
    lines = res.stdout.splitlines()
    assert res.returncode == 1, res.stdout + res.stderr
    assert lines[-1] == "4 passed, 1 failed, 4 skipped (plain runner, pytest stand-in)", res.stdout
    passed = sorted(ln.split("::")[1] for ln in lines if ln.startswith("PASS"))
    assert passed == ["test_grid[x10-1-2]", "test_grid[x10-3-4]", "test_grid[x20-1-2]", "test_raises_and_fixtures"]
    assert any(ln.startswith("FAIL test_sample.py::test_fails: AssertionError: one is not two") for ln in lines)
    assert "PLAIN_RUNNER_PROBE" not in os.environ
