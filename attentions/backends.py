"""Which backend runs each fast path: one ``can_run_*`` check per fast path and one rule for choosing.

The pattern is NATTEN's: a fast path is taken only when its check finds nothing that stops it, and a check returns
*the reason* it cannot run (``None`` when it can), so a refusal can be reported instead of guessed at.

Fast paths, each with the plain-torch path it falls back to:

* ``"routed"`` (BRA, DBRA's agent refinement): the Triton kernel :mod:`attentions.kernels.routed_attention`;
  fallback ``"torch"`` (the lean chunked Function of :mod:`attentions.routing`). Also ``"official"``.
* ``"pixel_agent"`` (DBRA's back attention): the Triton kernel :mod:`attentions.kernels.pixel_agent_attention`;
  fallback ``"torch"``. Also ``"official"``. There is no agent-count limit: the kernel streams agents through
  tiles of at most 256 (``MAX_BLOCK_S``), so 441 agents (DBRA stage 1 at a 128x128 token grid) run in two tiles.
* ``"attention"`` (MHSA): ``torch.nn.functional.scaled_dot_product_attention`` (``"sdpa"``); fallback ``"torch"``
  (the explicit softmax(QKᵀ)V).

A module's ``impl`` is ``"auto"`` or one backend name. ``"auto"`` takes the first fast path whose check passes,
else the fallback; it picks a Triton kernel only on a CUDA device (the CPU interpreter is for tests and is slow).
An explicit backend that cannot run raises :class:`BackendError` naming the reason. The modules choose through
:func:`select`, which records what they ran; :func:`ran` reads it back for the results row's ``backend`` and
``backend_why`` columns.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Optional

import torch
from torch import nn

__all__ = [
    "BackendError",
    "Choice",
    "FALLBACK",
    "FAST_PATHS",
    "can_run_pixel_agent_triton",
    "can_run_routed_triton",
    "can_run_sdpa",
    "choose",
    "on_cuda",
    "ran",
    "select",
]

TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # the kernels' _DTYPES


class BackendError(ValueError):
    """An explicitly requested backend cannot run this input."""


@dataclasses.dataclass(frozen=True)
class Choice:
    """The backend a fast path ran with, and why: ``"requested"``, or for ``"auto"`` the checks' verdicts."""

    backend: str
    why: str


def on_cuda(device: torch.device) -> bool:
    """The CUDA predicate of every Triton check (one place, so that a test can force it true on CPU)."""
    return device.type == "cuda"


def _kernel_missing(module: str) -> Optional[str]:
    try:
        importlib.import_module(f"attentions.kernels.{module}")
    except ModuleNotFoundError as e:
        # only a missing triton or a missing kernel module means "not available"; any other error is a bug
        if e.name not in ("triton", f"attentions.kernels.{module}"):
            raise
        return f"attentions.kernels.{module} does not import ({e})"
    return None


def _triton_refuses(module: str, kernel: str, device: torch.device, dtype: torch.dtype,
                    explicit: bool) -> Optional[str]:
    if dtype not in TRITON_DTYPES:
        return f"dtype {str(dtype).replace('torch.', '')} is not one of float32, bfloat16, float16"
    missing = _kernel_missing(module)
    if missing:
        return missing
    if on_cuda(device):
        return None
    if explicit and device.type == "cpu":
        from .kernels._common import interpreted

        if interpreted(getattr(importlib.import_module(f"attentions.kernels.{module}"), kernel)):
            return None  # the Triton interpreter (TRITON_INTERPRET=1): tests run the kernel on CPU tensors
    return f"the input is on {device}, not CUDA"


def can_run_routed_triton(device: torch.device, dtype: torch.dtype, explicit: bool = False) -> Optional[str]:
    """Why the Triton routed-attention kernel cannot run here (``None``: it can). ``explicit``: requested by name,
    which also allows CPU tensors under the Triton interpreter."""
    return _triton_refuses("routed_attention", "_routed_attn_fwd", device, dtype, explicit)


def can_run_pixel_agent_triton(device: torch.device, dtype: torch.dtype, explicit: bool = False) -> Optional[str]:
    """Why the Triton pixel-to-agent kernel cannot run here (``None``: it can); any agent count runs (tiles)."""
    return _triton_refuses("pixel_agent_attention", "_pixel_agent_fwd", device, dtype, explicit)


def can_run_sdpa(device: torch.device, dtype: torch.dtype, explicit: bool = False) -> Optional[str]:
    """Why ``scaled_dot_product_attention`` cannot run (``None``: it can); it has a kernel for every device and
    floating dtype torch supports, so only a torch without it refuses."""
    if not hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        return f"torch {torch.__version__} has no scaled_dot_product_attention"
    return None


Check = Callable[[torch.device, torch.dtype, bool], Optional[str]]

#: per fast path, its accelerated backends in order of preference, each with its check
FAST_PATHS: dict[str, list[tuple[str, Check]]] = {
    "routed": [("triton", can_run_routed_triton)],
    "pixel_agent": [("triton", can_run_pixel_agent_triton)],
    "attention": [("sdpa", can_run_sdpa)],
}
#: per fast path, the plain-torch backend that always runs
FALLBACK = {"routed": "torch", "pixel_agent": "torch", "attention": "torch"}


def choose(path: str, impl: str, x: torch.Tensor, owner: str) -> Choice:
    """The backend of fast path ``path`` for a module's ``impl`` setting and its input ``x``.

    ``owner`` names the module in errors. Raises :class:`BackendError` when ``impl`` names a backend whose check
    refuses this input, with the check's reason.
    """
    return _choose(path, impl, x.device, x.dtype, owner)


def _choose(path: str, impl: str, device: torch.device, dtype: torch.dtype, owner: str) -> Choice:
    fast = FAST_PATHS[path]
    if impl != "auto":
        check = dict(fast).get(impl)
        reason = check(device, dtype, True) if check else None
        if reason:
            raise BackendError(f"{owner}: impl={impl!r} cannot run the {path} attention: {reason}; use impl='auto' "
                               f"(falls back to {FALLBACK[path]!r}) or impl={FALLBACK[path]!r}")
        return Choice(impl, "requested")
    refusals = []
    for name, check in fast:
        reason = check(device, dtype, False)
        if reason is None:
            return Choice(name, "auto: " + "; ".join(refusals + [f"{name} can run"]))
        refusals.append(f"{name}: {reason}")
    return Choice(FALLBACK[path], "auto: " + "; ".join(refusals))


def select(module: nn.Module, path: str, x: torch.Tensor) -> str:
    """The backend ``module`` (an attention with ``config.impl``) runs fast path ``path`` with for input ``x``,
    recorded on the module for :func:`ran`. Under ``torch.compile`` the choice is a constant of the graph (the
    checks import modules and read flags, which the compiler cannot trace) and is not recorded."""
    impl = module.config.impl
    if torch.compiler.is_compiling():
        return _constant_backend(path, impl, x.device.type, x.device.index, x.dtype, module.name)
    choice = _choose(path, impl, x.device, x.dtype, module.name)
    module.__dict__.setdefault("_backends_ran", {})[path] = choice
    return choice.backend


def _constant_backend(path: str, impl: str, device_type: str, index: Optional[int], dtype: torch.dtype,
                      owner: str) -> str:
    return _choose(path, impl, torch.device(device_type, index), dtype, owner).backend


# what @torch.compiler.assume_constant_result sets, without the decorator's import of torch._dynamo (~2 s of CPU in
# every fresh interpreter: isolated cells, local jobs); tests/test_backends.py checks the two stay the same
_constant_backend._dynamo_marked_constant = True


def ran(module: nn.Module) -> dict[str, str]:
    """The ``backend`` and ``backend_why`` columns for a module (or a model of them) after a forward:
    ``path=backend`` per fast path (``;``-joined, sorted), and the reasons; ``{}`` for a module without fast paths
    (agent, DAT) or before its first forward."""
    seen: dict[str, Choice] = {}
    for m in module.modules():
        for path, choice in m.__dict__.get("_backends_ran", {}).items():
            seen.setdefault(path, choice)  # a model's blocks at one dtype/device choose alike; the first speaks
    paths = sorted(seen)
    if not paths:
        return {}
    return {"backend": ";".join(f"{p}={seen[p].backend}" for p in paths),
            "backend_why": ";".join(f"{p}: {seen[p].why}" for p in paths)}
