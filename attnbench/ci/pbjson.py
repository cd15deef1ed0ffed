"""pytest-benchmark's JSON layout for the gate's and the PR mode's results, so ``pytest-benchmark compare``,
github-action-benchmark (``tool: pytest``) and ``--benchmark-compare`` tooling read them unchanged.

The layout is that of ``pytest --benchmark-json`` (pytest-benchmark 4/5): ``machine_info``, ``commit_info``,
``benchmarks[]`` (``group``, ``name``, ``fullname``, ``params``, ``param``, ``extra_info``, ``options``,
``stats`` with the raw ``data``), ``datetime``, ``version``. Statistics are computed by pytest-benchmark's own
``Stats`` class; each benchmark is named like the ``benchmarks/`` test that times the same case
(``test_bench[<case>]``), so a gate file and a ``pytest benchmarks`` file compare name by name.
"""
from __future__ import annotations

import datetime
import json
import platform
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

__all__ = ["TEST_FILE", "benchmark_entry", "document", "write", "machine_info", "commit_info", "cpu_name"]

TEST_FILE = "benchmarks/test_benchmarks.py"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else ``platform.processor()``; cheap, unlike py-cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str) -> dict[str, Any]:
    """pytest-benchmark's machine_info plus torch, the device and the thread count."""
    try:
        from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info

        info = pytest_benchmark_generate_machine_info()
    except Exception:  # py-cpuinfo can fail in odd containers; keep the platform basics
        info = {"node": platform.node(), "machine": platform.machine(), "system": platform.system(),
                "python_version": platform.python_version(), "cpu": {}}
    info.update(torch=torch.__version__, device=device, threads=torch.get_num_threads())
    if device == "cuda" and torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def commit_info(repo: Optional[Path] = None) -> dict[str, Any]:
    """pytest-benchmark's commit_info of ``repo`` (the current directory when None)."""
    import os

    from pytest_benchmark.utils import get_commit_info

    cwd = os.getcwd()
    try:
        if repo is not None:
            os.chdir(repo)
        return get_commit_info()
    finally:
        os.chdir(cwd)


def benchmark_entry(case: str, group: str, params: dict, times_s: Sequence[float], calls_per_round: int,
                    extra_info: dict[str, Any]) -> dict[str, Any]:
    """One ``benchmarks[]`` entry: ``times_s`` are seconds per call, one per round."""
    from pytest_benchmark.stats import Stats

    stats = Stats()
    for t in times_s:
        stats.update(t)
    out = stats.as_dict()
    out.update(data=list(times_s), iterations=calls_per_round)
    return {
        "group": group,
        "name": f"test_bench[{case}]",
        "fullname": f"{TEST_FILE}::test_bench[{case}]",
        "params": {"case": case},
        "param": case,
        "extra_info": {**params, **extra_info},
        "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": len(times_s), "max_time": 0,
                    "min_time": 0, "warmup": True},
        "stats": out,
    }


def document(benchmarks: list[dict], device: str, repo: Optional[Path] = None) -> dict[str, Any]:
    """The whole JSON document."""
    from pytest_benchmark import __version__

    return {
        "machine_info": machine_info(device),
        "commit_info": commit_info(repo),
        "benchmarks": benchmarks,
        "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "version": __version__,
    }


def write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
