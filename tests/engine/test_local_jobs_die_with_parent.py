"""Local jobs die with their parent (issue 19, item 7): the local executor left its job running when the parent got
SIGTERM (the docs say jobs are cancelled with the parent), a SIGKILLed parent left it too, and Ctrl-C printed a
submitit `KeyboardInterrupt` traceback. Real submitit jobs; the parent is a separate process so it can be killed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import engine_fakes as fakes
import executor_fakes as xfakes

from attnbench.engine.executors.ledger import read_ledger
from attnbench.core.results import shard_dir
from attnbench.engine.parent_watch import process_alive
from attnbench.core.results import read_rows

HERE = Path(__file__).resolve().parent

PARENT = """
import sys
sys.path[:0] = [{root!r}, {here!r}]
import engine_fakes as fakes, executor_fakes as xfakes
from attnbench import metrics
from attnbench.engine import execute, runner
fakes.FAKE_METRICS["nap"] = xfakes.nap_metric
metrics.METRICS = {{name: "_fake_" + name for name in fakes.FAKE_METRICS}}
metrics.get_metric = lambda name: fakes.FAKE_METRICS[name]
execute.correctness_gate = lambda: fakes.check_finite
from attnbench.engine.executors.submit import run_with_executor
p = runner.plan({suite!r}, out={out!r}, cuda_available=False)
run_with_executor(p, "local", None, wait=True, progress=True, argv=["test"])
print("parent ended cleanly", file=sys.stderr)
"""


def _first_job_id(run_dir: Path):
    ledger = read_ledger(run_dir) if (run_dir / "jobs.json").exists() else None
    subs = [s for j in (ledger or {}).get("jobs", []) for s in j.get("submissions", [])]
    return subs[0]["job_id"] if subs else None


# a parent and a local job (three processes, two torch imports) and a job that naps: 7-14 s each; .ci/run runs SIGKILL
@pytest.mark.parametrize("how", [
    pytest.param("SIGKILL", marks=pytest.mark.slow),
    pytest.param("SIGTERM", marks=pytest.mark.slow),
    pytest.param("Ctrl-C", marks=pytest.mark.slow),
])
def test_local_job_dies_with_its_parent(tmp_path, how):
    suite = fakes.tiny_suite(metrics=["shape", "nap"], executor={"cells_per_job": 8, "poll_s": 0.2})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    run_dir = tmp_path / "run"
    code = PARENT.format(root=str(xfakes.ROOT), here=str(HERE), suite=str(tmp_path / "s.yaml"), out=str(run_dir))
    env = {**os.environ, xfakes.NAP_ENV: "2", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "parent.err", "w")
    parent = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=log, start_new_session=True)
    family: list[int] = []
    try:
        controller = int(xfakes.wait_for(lambda: _first_job_id(run_dir), 90, "the job's submission"))
        task = xfakes.wait_for(lambda: xfakes.task_of(controller), 60, "the job's task process")[0]
        family = [controller, task]
        xfakes.wait_for(lambda: read_rows(shard_dir(run_dir, "job-0000")), 60, "a first row of the job")
        if how == "SIGKILL":
            parent.send_signal(signal.SIGKILL)
        elif how == "SIGTERM":
            parent.send_signal(signal.SIGTERM)
        else:  # a terminal's Ctrl-C goes to the whole foreground process group
            os.killpg(parent.pid, signal.SIGINT)
        parent.wait(30)
        xfakes.wait_for(lambda: not any(process_alive(p) for p in family), 5, "the job's processes to end")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for p in family:  # the bug this test is about: do not leave them running
            if process_alive(p):
                os.kill(p, signal.SIGKILL)
        log.close()
    err = (tmp_path / "parent.err").read_text()
    if how != "SIGKILL":
        assert "parent ended cleanly" in err and "Traceback" not in err, err[-3000:]
