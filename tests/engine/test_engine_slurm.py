"""``attnbench run --executor slurm`` against a real single-node Slurm (slurmctld + slurmd + munge on localhost).

Slow (job start-ups dominate; ~1-2 min on 2 loaded cores) and needs root to start the daemons:
``python3 -m pytest -q -m slow tests/engine/test_engine_slurm.py``. The fixture runs ``scripts/slurm_local.sh``
(which installs Debian's slurm-wlm and munge when missing, writes the configuration and starts the daemons); the
tests are skipped, with the script's reason, where it cannot.
"""
from __future__ import annotations

import collections
import subprocess

import pytest
import yaml
from click.testing import CliRunner

import engine_fakes as fakes
import executor_fakes as xfakes

from attnbench import metrics
from attnbench.engine import runner
from attnbench.cli import main
from attnbench.engine.executors.ledger import read_ledger, slurm_states
from attnbench.core.results import shard_dir
from attnbench.engine.executors.submit import run_with_executor
from attnbench.core.results import read_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm():
    """SLURM_CONF of a running single-node cluster, or skip with the script's reason."""
    conf, why = xfakes.local_slurm()
    if conf is None:
        pytest.skip(why)
    return conf


@pytest.fixture
def slurm_env(slurm, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_scancel_mid_job_then_resume_gives_every_cell_exactly_once(slurm_env, fake_metrics, write_suite, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setitem(fakes.FAKE_METRICS, "nap", xfakes.nap_metric)
    monkeypatch.setitem(metrics.METRICS, "nap", "_fake_nap")
    # submitit's jobs ignore scancel's SIGTERM (it is also what Slurm sends before a pre-emption); the SIGKILL
    # follows KillWait (5 s, scripts/slurm_local.sh) later: 4 s cells make sure that lands inside the job
    monkeypatch.setenv(xfakes.NAP_ENV, "4")
    suite = fakes.tiny_suite(metrics=["shape", "nap"],
                             executor={"cells_per_job": 3, "cpus_per_task": 1, "timeout_min": 10, "poll_s": 0.5})
    path, run_dir = write_suite(suite), tmp_path / "run"
    expected = [c.cell_id for c in runner.plan(str(path), out=str(tmp_path / "x"), cuda_available=False).to_run]
    first = run_with_executor(runner.plan(str(path), out=str(run_dir), cuda_available=False), "slurm",
                              wait=False, progress=False, argv=["test"])
    assert first.submitted == 3
    victim = read_ledger(run_dir)["jobs"][0]
    victim_id = victim["submissions"][0]["job_id"]
    xfakes.wait_for(lambda: len(read_rows(shard_dir(run_dir, "job-0000"))) >= 1, 120, "job-0000's first row")
    subprocess.run(["scancel", victim_id], check=True)
    xfakes.wait_for(lambda: slurm_states([victim_id]).get(victim_id) == "CANCELLED", 60, "the job cancelled")
    cut = len(read_rows(shard_dir(run_dir, "job-0000")))
    assert 1 <= cut < 3, "scancel came too late to cut the job mid-way"

    status = CliRunner().invoke(main, ["status", str(run_dir)])
    assert status.exit_code == 0, status.output
    line = next(ln for ln in status.output.splitlines() if ln.startswith("job-0000"))
    assert "failed (CANCELLED)" in line and victim_id in line and victim["submissions"][0]["stdout"] in line

    summary = run_with_executor(runner.plan(None, resume=str(run_dir), cuda_available=False), "slurm",
                                progress=False, argv=["resume"])
    ids = [r["cell_id"] for r in read_rows(run_dir)]
    assert collections.Counter(ids) == collections.Counter(expected)  # every cell, exactly once
    assert summary.missing == 0 and summary.counts == {"ok": 8}
    jobs = read_ledger(run_dir)["jobs"]
    new = [j for j in jobs if j["name"] not in ("job-0000", "job-0001", "job-0002")]
    assert sorted(c for j in new for c in j["cells"]) == sorted(set(victim["cells"]) - {
        r["cell_id"] for r in read_rows(shard_dir(run_dir, "job-0000"))})  # only the missing cells re-submitted
    for row in read_rows(run_dir):
        assert row["status"] == "ok" and row["nap_tokens"] == row["tokens"] == row["fake_tokens"]


SUITE = {
    "name": "cluster_equal",
    "attentions": [{"name": "mhsa"}, {"name": "bra", "config": {"n_win": 2, "topk": 2}}],
    "defaults": {"dim": 32, "num_heads": 2},
    "axes": {"resolution": [8, 16], "device": ["cpu"], "pass": ["forward", "forward_backward"]},
    "metrics": ["params", "flops", "memory"],
    "executor": {"cells_per_job": 4, "cpus_per_task": 1, "timeout_min": 10, "poll_s": 0.5},
}
#: columns that depend on when and where a cell ran, not on what it measured
VOLATILE = {"run_id", "started_at", "duration_s", "load_before", "load_after", "busy_before", "busy_after"}


def test_inline_local_and_slurm_runs_measure_the_same(slurm_env, tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    rows = {}
    for how, extra in (("inline", []), ("local", ["--executor", "local", "--max-parallel", "2"]),
                       ("slurm", ["--executor", "slurm", "--cpus", "1"])):
        result = CliRunner().invoke(main, ["run", str(path), "--out", str(tmp_path / how), "--no-progress", *extra])
        assert result.exit_code == 0, result.output
        rows[how] = read_rows(tmp_path / how)
    for how in ("local", "slurm"):
        ids = [r["cell_id"] for r in rows[how]]
        assert len(ids) == len(set(ids)) == 8 and set(ids) == {r["cell_id"] for r in rows["inline"]}
    inline = {r["cell_id"]: r for r in rows["inline"]}
    for how in ("local", "slurm"):
        for row in rows[how]:
            ref = inline[row["cell_id"]]
            assert row["status"] == ref["status"] == "ok", (row.get("error"), ref.get("error"))
            same = {k: v for k, v in row.items() if k not in VOLATILE}
            assert same == {k: v for k, v in ref.items() if k not in VOLATILE}, (how, row["cell_id"])
            assert row["params"] > 0 and row["macs_fvcore"] > 0 and row["mem_peak_bytes"] > 0
    assert len(read_ledger(tmp_path / "slurm")["jobs"]) == 2
