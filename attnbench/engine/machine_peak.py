"""The machine's roof, probed once per run: matrix-multiply throughput (float32, and bfloat16 where it runs) and
copy bandwidth, for the roofline of the ``breakdown`` metric.

``probe(device)`` takes a few seconds: square matmuls of side ``n`` (CPU 512, bf16 on CPU 192, CUDA 4096) and a copy of a large
tensor (CPU 64 MiB, CUDA 1 GiB), each repeated, keeping the **best** rate (a peak is what the machine can do; a
loaded machine only lowers it). FLOPs of a matmul are 2·n³; a copy moves 2 × its bytes (one read, one write).
The runner calls :func:`for_suite` when a run starts and records the result in the manifest as ``machine_peak``;
suites without ``breakdown`` skip it. On a shared CPU run it with the suite's thread count, as the cells run.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

import torch

from ..core.torch_threads import use_threads

__all__ = ["probe", "for_suite", "suite_device", "suite_threads", "attainable_gflops"]

_MATMUL_N = {"cpu": 512, "cuda": 4096}
#: a CPU without bfloat16 matrix units runs bf16 matmuls ~100x slower than fp32: a smaller side keeps the probe short
_MATMUL_N_CPU_BF16 = 192
_COPY_BYTES = {"cpu": 64 << 20, "cuda": 1 << 30}


def _best_seconds(fn: Callable[[], None], device: torch.device, repeats: int, calls: int) -> float:
    """The fastest of ``repeats`` timings of ``calls`` back-to-back calls, per call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def _matmul_gflops(device: torch.device, dtype: torch.dtype) -> Optional[float]:
    n = _MATMUL_N_CPU_BF16 if (device.type, dtype) == ("cpu", torch.bfloat16) else _MATMUL_N[device.type]
    try:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        seconds = _best_seconds(lambda: torch.mm(a, b, out=out), device, repeats=5, calls=3)
    except (RuntimeError, TypeError):  # a dtype this device's matmul does not run
        return None
    return 2 * n**3 / seconds / 1e9


def _copy_gbs(device: torch.device) -> float:
    n = _COPY_BYTES[device.type] // 4
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    seconds = _best_seconds(lambda: dst.copy_(src), device, repeats=5, calls=2)
    return 2 * n * 4 / seconds / 1e9


def probe(device: str | torch.device = "cpu", threads: Optional[int] = None) -> dict[str, Any]:
    """``{device, threads, fp32_gflops, bf16_gflops (None where bf16 matmul fails), copy_gbs, probe_s}``."""
    device = torch.device(device)
    t0 = time.perf_counter()
    with use_threads(threads):
        result = {
            "device": device.type,
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "fp32_gflops": _matmul_gflops(device, torch.float32),
            "bf16_gflops": _matmul_gflops(device, torch.bfloat16),
            "copy_gbs": _copy_gbs(device),
        }
    result["probe_s"] = time.perf_counter() - t0
    return result


def suite_device(suite) -> str:
    """The concrete device the suite's cells run on (the first of its device axis; cuda_if_available resolved)."""
    devices = suite.axes.values("device") if hasattr(suite.axes, "values") else ["cuda_if_available"]
    first = str(devices[0]) if devices else "cuda_if_available"
    if first == "cuda_if_available":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return first


def suite_threads(suite) -> Optional[int]:
    """The torch threads the cells are measured with: ``settings.threads``, else ``settings.latency.threads``."""
    threads = suite.settings.get("threads")
    if threads is None:
        threads = (suite.settings.get("latency") or {}).get("threads")
    return threads


def for_suite(suite, device: Optional[str] = None) -> dict[str, Any]:
    """``{"machine_peak": probe(...)}`` for a suite with the ``breakdown`` metric, else ``{}``; ``device`` (a run's
    ``--device``) overrides the suite's axis."""
    if "breakdown" not in suite.metrics:
        return {}
    dev = device if device in ("cpu", "cuda") else suite_device(suite)
    if dev == "cuda" and not torch.cuda.is_available():
        dev = "cpu"
    return {"machine_peak": probe(dev, suite_threads(suite))}


def attainable_gflops(intensity: float, peak_gflops: float, copy_gbs: float) -> float:
    """The roofline: min(peak, intensity × bandwidth), GFLOP/s at ``intensity`` FLOPs per byte."""
    return min(peak_gflops, intensity * copy_gbs)
