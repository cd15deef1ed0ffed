"""PR-vs-base mode end to end: a throwaway git repository whose working tree doubles MHSA's work against its
committed base; the slowdown is flagged, each worker runs its own tree's code, the worktree is cleaned up."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from attnbench.cli import main

ROOT = Path(__file__).resolve().parents[2]
CASE = "attention-mhsa-forward-14"
#: appended to the head's attentions/mhsa.py: every forward runs twice (2× the work and the FLOPs)
SLOWDOWN = """

_forward_once = MHSA.forward


def _forward_twice(self, x):
    _forward_once(self, x)
    return _forward_once(self, x)


MHSA.forward = _forward_twice
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def repo(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "attentions", repo / "attentions", ignore=shutil.ignore_patterns("__pycache__"))
    _git(tmp_path, "init", "-q", str(repo))
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    return repo


@pytest.mark.slow
def test_pr_mode_flags_a_slowdown_in_the_head_tree(repo, tmp_path):
    with open(repo / "attentions" / "mhsa.py", "a") as f:
        f.write(SLOWDOWN)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["ci", "--base", "HEAD", "--repo", str(repo), "--only", CASE, "--rounds", "10",
                                    "--out", str(out)])
    assert res.exit_code == 1, res.output
    rows = json.loads((out / "verdicts.json").read_text())
    time_row = next(r for r in rows if r["metric"] == "time")
    assert time_row["verdict"] == "slower" and 1.4 < time_row["ratio"]["estimate"] < 3.0, time_row
    flops = next(r for r in rows if r["metric"] == "flops")
    assert flops["verdict"] == "higher" and flops["ratio"]["estimate"] == pytest.approx(2.0)
    head = json.loads((out / "benchmarks.json").read_text())["benchmarks"][0]
    base = json.loads((out / "base.json").read_text())["benchmarks"][0]
    assert head["extra_info"]["tree"] == "head" and base["extra_info"]["tree"] == "base"
    assert head["extra_info"]["flops"] == 2 * base["extra_info"]["flops"]  # each worker ran its own tree's code
    assert "| attention-mhsa-forward-14 | time |" in (out / "summary.md").read_text()
    assert _git(repo, "worktree", "list").count("\n") == 1  # the temporary base worktree is gone


def test_pr_mode_rejects_an_unknown_base(repo, tmp_path):
    res = CliRunner().invoke(main, ["ci", "--base", "no-such-ref", "--repo", str(repo), "--only", CASE,
                                    "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "not a commit" in res.output
