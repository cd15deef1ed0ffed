"""Helpers shared by the Triton kernels: interpreter detection, device checks, tile sizes, matmul precision,
autotuning (collapsed to one heuristic configuration under the interpreter) and launching.

The Triton interpreter (``TRITON_INTERPRET=1``) runs a kernel's programs one after another on the CPU with NumPy.
``triton.jit`` reads that variable when it *decorates* a kernel, so it must be set before the first import of
:mod:`attentions.kernels` (``tests/conftest.py`` does this when no GPU is present). Kernels decorated under the
interpreter run on CPU tensors; kernels compiled for the GPU run on CUDA tensors only. Every call of a nested
``@triton.jit`` function costs the interpreter about a millisecond (it re-patches ``triton.language``), so the
kernels call their shared helpers once per program or once per tile, never in an inner loop of their own.
"""
from __future__ import annotations

import os

import torch
import triton

__all__ = ["LOG2E", "interpreted", "check_runnable", "pow2_at_least", "dot_precision", "upcast_operands",
           "autotuned", "launch", "batch_bucket", "MAX_CONFIGS", "debug_checks"]

MAX_CONFIGS = 3  # autotune configurations per kernel and shape: each is one more compile inside the GPU check

LOG2E = 1.4426950408889634  # log2(e): the kernels use exp2, so logits are pre-multiplied by it


def interpreted(kernel) -> bool:
    """True when ``kernel`` was decorated under ``TRITON_INTERPRET=1`` (it runs on CPU tensors, in NumPy)."""
    return type(kernel).__name__ == "InterpretedFunction"


def check_runnable(op: str, kernel, *tensors: torch.Tensor) -> None:
    """Raise a clear error when ``kernel`` cannot run on the tensors' device.

    CUDA tensors need a compiled kernel; CPU tensors need the interpreter. All tensors must share one device.
    """
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"{op}: all tensors must be on one device, got {sorted(str(d) for d in devices)}")
    device = tensors[0].device
    if device.type == "cuda" and not interpreted(kernel):
        return
    if device.type == "cpu" and interpreted(kernel):
        return
    if device.type == "cpu":
        raise RuntimeError(
            f"{op}: the Triton kernel runs on CUDA tensors; on CPU it runs only under the Triton interpreter, and "
            "TRITON_INTERPRET=1 must be set before attentions.kernels is first imported. Use impl='torch' on CPU."
        )
    raise RuntimeError(
        f"{op}: tensors are on {device}, but the kernel was built for "
        f"{'the interpreter (TRITON_INTERPRET=1)' if interpreted(kernel) else 'CUDA'}; "
        "unset TRITON_INTERPRET to run on the GPU"
    )


def pow2_at_least(n: int, lo: int = 16, hi: int | None = None) -> int:
    """Smallest power of two ≥ max(n, lo), capped at ``hi``. tl.dot needs every tile side ≥ 16."""
    p = max(triton.next_power_of_2(int(n)), lo)
    return min(p, hi) if hi is not None else p


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot's ``input_precision``: IEEE for float32 inputs (torch's matmul default; tf32 would miss the 1e-4
    tests), Triton's default otherwise (it only matters for float32 operands)."""
    return "ieee" if dtype == torch.float32 else "tf32"


def upcast_operands(kernel) -> bool:
    """Whether the kernel must upcast its tiles to float32 before tl.dot: only under the interpreter, whose tl.dot
    multiplies bfloat16 tiles as raw integers (triton 3.8). Products of bf16 values are exact in float32, so the
    upcast changes only the summation order (and probabilities are not rounded to bf16 before PV)."""
    return interpreted(kernel)


def autotuned(kernel, configs: list, key: list[str], prune, reset_to_zero=None):
    """``kernel`` wrapped in ``triton.autotune`` over ``configs`` (pruned per shape by ``prune(configs, args)``),
    or None where autotuning is off: under the interpreter (every launch would run each config on the CPU) and
    when ``ATTN_KERNELS_AUTOTUNE=0`` (read at import; the GPU check's test stage uses it to skip the tuning
    compiles). Triton appends the dtypes of the tensor arguments to ``key`` itself, so the key is (key..., dtypes).
    ``reset_to_zero`` names buffers the kernel accumulates into: zeroed before every timed config and again
    before the real launch."""
    if interpreted(kernel) or os.environ.get("ATTN_KERNELS_AUTOTUNE", "1") == "0":
        return None

    def early_prune(cfgs, named_args, **kwargs):
        kept = prune(cfgs, {**named_args, **kwargs})
        return kept or cfgs[:1]

    return triton.autotune(configs=configs, key=key, reset_to_zero=reset_to_zero,
                           prune_configs_by={"early_config_prune": early_prune})(kernel)


def debug_checks() -> bool:
    """``ATTN_KERNELS_DEBUG=1``: check index ranges of CUDA inputs too (read at every call). Off by default because
    reading an index tensor's min/max synchronises the GPU; CPU inputs are always checked (docs/kernels.md)."""
    return os.environ.get("ATTN_KERNELS_DEBUG", "0") == "1"


def batch_bucket(batch: int) -> int:
    """The batch as an autotune key argument (``BATCH_BUCKET``): batches 1, 2-4, 5-16 and > 16 tune separately
    (batch 1 launches a 64× smaller grid than batch 64 and wants other tiles); nearby batches share a tuning."""
    return next((b for b in (1, 4, 16) if batch <= b), 64)


def launch(kernel, tuned, grid, args: tuple, consts: dict, heuristic: dict, forced: bool) -> None:
    """Launch ``tuned`` (autotuned over the tile meta-parameters) or, when it is None or tiles were ``forced`` by
    the caller (tests), ``kernel`` with the ``heuristic`` tiles. ``grid(meta)`` gives the launch grid."""
    if tuned is None or forced:
        meta = {**consts, **heuristic}
        kernel[grid(meta)](*args, **meta)
    else:
        tuned[grid](*args, **consts)
