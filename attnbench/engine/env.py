"""The environment a run measured on, captured into its ``manifest.json``.

Everything that changes a number: library versions, the git commit (and whether the tree had local changes), the
CPU model and thread counts, the GPU, CUDA and driver, and the numerics flags (TF32, cuDNN benchmark/deterministic,
deterministic algorithms, float32 matmul precision), plus the environment variables that steer threads and GPUs.
Every probe is best-effort: a missing tool gives ``None``, never an exception.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import torch

from .. import __version__

__all__ = ["capture", "cpu_model", "git_commit"]

_PACKAGES = ("torch", "triton", "fvcore", "numpy", "pydantic", "timm", "torchvision", "pandas")
_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG",
             "PYTORCH_CUDA_ALLOC_CONF", "TORCH_COMPILE_DEBUG", "TRITON_INTERPRET")


def _run(cmd: list[str], cwd: Optional[Path] = None) -> Optional[str]:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (subprocess.SubprocessError, OSError):
        return None
    return out.stdout.strip()


def git_commit(repo: Optional[Path] = None) -> tuple[Optional[str], Optional[bool]]:
    """(HEAD commit, tree has uncommitted changes) of the checkout attnbench runs from; (None, None) outside git."""
    repo = repo or Path(__file__).resolve().parent.parent
    commit = _run(["git", "rev-parse", "HEAD"], cwd=repo)
    if not commit:
        return None, None
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo)
    return commit, (bool(status) if status is not None else None)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["torch_runtime"] = torch.__version__
    return out


def _cuda() -> Optional[dict[str, Any]]:
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return {
        "version": torch.version.cuda,
        "driver": driver.splitlines()[0] if driver else None,
        "cudnn": torch.backends.cudnn.version(),
        "device_count": torch.cuda.device_count(),
        "capability": f"{props.major}.{props.minor}",
        "memory_bytes": props.total_memory,
    }


def _numerics() -> dict[str, Any]:
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_fp16_reduced_precision": torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction,
    }


def capture() -> dict[str, Any]:
    """The environment as a JSON-ready dict (the manifest's environment keys)."""
    commit, dirty = git_commit()
    cuda = _cuda()
    cpu = cpu_model()
    return {
        "attnbench_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "versions": _versions(),
        "device_name": torch.cuda.get_device_name(0) if cuda else cpu,
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cuda": cuda,
        "determinism": _numerics(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "executable": sys.executable,
        "env": {k: os.environ[k] for k in _ENV_VARS if k in os.environ},
    }
