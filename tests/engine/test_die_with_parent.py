"""Children die with their parent (issue 19, item 7): when `attnbench run` was SIGKILLed while an isolated cell
ran, the child kept running (7 of 7 trials) and left its outcome file in the system temp directory."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import executor_fakes as xfakes

from attnbench.engine.parent_watch import process_alive, watch_parent

HERE = Path(__file__).resolve().parent


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(xfakes.ROOT), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _cell_children(pid: int) -> list[int]:
    out = []
    for child in xfakes.children(pid):
        try:
            if b"attnbench.engine.runner" in Path(f"/proc/{child}/cmdline").read_bytes():
                out.append(child)
        except OSError:
            pass
    return out


@pytest.mark.slow  # a run and its cell child, two torch imports, killed: ~3-6 s; .ci/run runs it
def test_sigkill_of_the_run_takes_its_isolated_cell_child_with_it(tmp_path):
    suite = {"name": "hang", "attentions": [{"name": "engine_fakes:Sleepy", "label": "sleepy"}],
             "axes": {"resolution": [4], "device": ["cpu"]}, "metrics": ["params"], "baseline": "sleepy",
             "settings": {"timeout_s": 120}}
    path = tmp_path / "hang.yaml"
    path.write_text(yaml.safe_dump(suite))
    run_dir = tmp_path / "run"
    parent = subprocess.Popen([sys.executable, "-m", "attnbench", "run", str(path), "--out", str(run_dir),
                               "--no-progress"], env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    child = None
    try:
        child = xfakes.wait_for(lambda: _cell_children(parent.pid), 90, "the isolated cell's process")[0]
        outcome_dirs = xfakes.wait_for(lambda: list((run_dir / ".cells").glob("cell-*")), 10,
                                       "the child's outcome folder inside the run directory")
        assert outcome_dirs
        time.sleep(0.5)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        xfakes.wait_for(lambda: not process_alive(child), 5, "the child to die with its parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None and process_alive(child):  # the bug this test is about: do not leave it running
            os.kill(child, signal.SIGKILL)


def test_watch_parent_kills_this_process_when_the_watched_one_ends(tmp_path):
    """What a local job's task runs (its parent is submitit's controller, so it watches the attnbench pid)."""
    code = ("import sys, time; sys.path.insert(0, %r); from attnbench.engine.parent_watch import watch_parent; "
            "watch_parent(int(sys.argv[1]), 0.1); time.sleep(60)" % str(xfakes.ROOT))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    watcher = subprocess.Popen([sys.executable, "-c", code, str(sleeper.pid)])
    try:
        time.sleep(1.0)
        assert watcher.poll() is None  # the watched process lives: so does the watcher
        sleeper.kill()  # a zombie until reaped below: process_alive must see it as gone already
        assert watcher.wait(5) == -signal.SIGKILL
        assert not process_alive(sleeper.pid)
    finally:
        for p in (sleeper, watcher):
            if p.poll() is None:
                p.kill()
            p.wait()
