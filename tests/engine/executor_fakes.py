"""Helpers of the executor tests: a metric slow enough to stop a job mid-way, and finding a job's task process.

The batch jobs import this module by name (the parent passes its ``sys.path`` on), as they import
``engine_fakes``; nothing here replaces engine code.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: seconds each cell of the ``nap`` metric takes (the jobs inherit the variable from the test process)
NAP_ENV = "ATTNBENCH_TEST_NAP_S"


def nap_metric(ctx) -> dict:
    """Sleeps, so a test can signal or cancel a job between two cells; one exact column."""
    time.sleep(float(os.environ.get(NAP_ENV, "0.6")))
    return {"nap_tokens": ctx.height * ctx.width}


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        out += [int(p) for p in text.split()]
    return out


def task_of(pid: int) -> list[int]:
    """The process of a local job (started by ``pid``, through a shell and submitit's controller) that runs
    the job's function; [] until it exists."""
    todo, found = [pid], []
    while todo:
        p = todo.pop()
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"submitit.core._submit" in cmd:
            found.append(p)
        todo += children(p)
    return found


def wait_for(predicate, timeout: float, what: str, step: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def local_slurm() -> tuple[str | None, str]:
    """(SLURM_CONF, '') of the single-node Slurm ``scripts/slurm_local.sh`` starts, or (None, why it could not)."""
    script = ROOT / "scripts" / "slurm_local.sh"
    try:
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return None, "scripts/slurm_local.sh did not finish in 300 s"
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        return None, f"scripts/slurm_local.sh could not start Slurm here: {tail}"
    env = subprocess.run(["bash", str(script), "--env"], capture_output=True, text=True).stdout
    return env.strip().split("=", 1)[1], ""
