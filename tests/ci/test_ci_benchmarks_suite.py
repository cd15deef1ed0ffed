"""``pytest benchmarks`` as pytest-benchmark users run it: JSON output with FLOPs and memory in extra_info,
autosave, then ``--benchmark-compare`` against the saved run and the offline ``pytest-benchmark compare``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASE = "attention-dat-forward-14"


def _pytest(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "-q", "-p", "no:cacheprovider",
                           "-k", CASE, "--benchmark-max-time=0.05", "--benchmark-min-rounds=3", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_benchmark_json_autosave_and_compare(tmp_path):
    storage = f"file://{tmp_path / 'storage'}"
    first = _pytest("--benchmark-json", str(tmp_path / "out.json"), "--benchmark-autosave",
                    "--benchmark-storage", storage, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    doc = json.loads((tmp_path / "out.json").read_text())
    (bench,) = doc["benchmarks"]
    assert bench["name"] == f"test_bench[{CASE}]" and bench["stats"]["rounds"] >= 3
    extra = bench["extra_info"]
    assert extra["flops"] > 0 and extra["mem_peak_bytes"] > 0 and extra["mem_method"] == "cpu_profiler_alloc_events"
    assert extra["attention"] == "dat" and extra["pass"] == "forward" and extra["grid"] == 14
    assert doc["machine_info"]["torch"] and doc["machine_info"]["device"] == "cpu"
    assert list((tmp_path / "storage").rglob("0001_*.json"))

    second = _pytest("--benchmark-compare", "--benchmark-storage", storage, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Comparing against benchmarks from" in second.stdout + second.stderr
    offline = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(tmp_path / "out.json")],
                             capture_output=True, text=True, timeout=120)
    assert offline.returncode == 0 and f"test_bench[{CASE}]" in offline.stdout
