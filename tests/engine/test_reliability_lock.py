"""One writer per run directory (issue 10): two `attnbench run --out D`, or two `--resume D`, both exited 0 and
wrote duplicated cells. Now the second is refused with the holder's PID, and a run that finds rows written by a
run that held the lock before it measures only what is missing."""
from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import pytest

import engine_fakes as fakes

from attnbench.engine import runner
from attnbench.suite.cells import expand
from attnbench.core.results import read_rows
from attnbench.engine.run_lock import RunLock, RunLocked
from attnbench.suite.load import load_suite

REPO = Path(__file__).resolve().parents[2]
HOLD = "import sys, time; from attnbench.engine.run_lock import RunLock; l = RunLock(sys.argv[1]).acquire(); " \
       "print('locked', flush=True); time.sleep(60)"


@pytest.fixture
def holder(tmp_path):
    """holder(run_dir) -> a child process (another 'run') holding run_dir's lock."""
    procs = []

    def start(run_dir: Path) -> subprocess.Popen:
        run_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO)] + sys.path))
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                                env=env)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def plan(path, **kw) -> runner.Plan:
    return runner.plan(None if path is None else str(path), cuda_available=False, **kw)


def test_second_run_into_the_same_out_is_refused_naming_the_pid(fake_metrics, write_suite, tmp_path, holder):
    path, run_dir = write_suite(fakes.tiny_suite()), tmp_path / "run"
    p = plan(path, out=str(run_dir))  # planned before the other run started writing
    proc = holder(run_dir)
    with pytest.raises(RunLocked, match=f"another attnbench process \\(PID {proc.pid}\\) is writing"):
        runner.run(p, progress=False, isolate=False)
    assert read_rows(run_dir) == []  # nothing written by the refused run
    proc.kill()
    proc.wait()  # the kernel drops the lock of a killed holder: no stale lock
    runner.run(p, progress=False, isolate=False)
    assert len(read_rows(run_dir)) == 8


def test_second_resume_of_one_directory_is_refused(fake_metrics, write_suite, tmp_path, holder):
    path, run_dir = write_suite(fakes.tiny_suite()), tmp_path / "run"
    fakes.TRIPS["interrupt"] = 6
    runner.run(plan(path, out=str(run_dir)), progress=False, isolate=False)
    fakes.TRIPS.clear()
    p = plan(None, resume=str(run_dir))
    proc = holder(run_dir)
    with pytest.raises(RunLocked, match=f"PID {proc.pid}"):
        runner.run(p, progress=False, isolate=False)
    assert len(read_rows(run_dir)) == 4


def test_rows_written_after_planning_are_not_measured_again(fake_metrics, write_suite, tmp_path):
    """Two resumes planned at once, run one after the other: the second measures nothing twice."""
    path, run_dir = write_suite(fakes.tiny_suite()), tmp_path / "run"
    fakes.TRIPS["interrupt"] = 6
    runner.run(plan(path, out=str(run_dir)), progress=False, isolate=False)
    fakes.TRIPS.clear()
    first, second = plan(None, resume=str(run_dir)), plan(None, resume=str(run_dir))
    assert len(first.to_run) == len(second.to_run) == 4
    runner.run(first, progress=False, isolate=False)
    assert runner.run(second, progress=False, isolate=False).ran == 0
    ids = [r["cell_id"] for r in read_rows(run_dir)]
    assert collections.Counter(ids) == collections.Counter(
        c.cell_id for c in expand(load_suite(path), cuda_available=False).cells)
    # and a second fresh run planned before the first wrote anything is refused once rows exist
    other = plan(path, out=str(tmp_path / "run2"))
    runner.run(plan(path, out=str(tmp_path / "run2")), progress=False, isolate=False)
    with pytest.raises(Exception, match="already holds results"):
        runner.run(other, progress=False, isolate=False)


def test_lock_file_is_removed_on_release_and_relocking_works(tmp_path):
    with RunLock(tmp_path) as lock:
        assert lock.path.read_text().strip() == str(os.getpid())
        with pytest.raises(RunLocked):  # a second open file description conflicts, even in one process
            RunLock(tmp_path).acquire()
    assert not (tmp_path / ".lock").exists()
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").exists()
