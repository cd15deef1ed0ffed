"""Test hook: ``ATTNBENCH_SLOWDOWN="LABEL_GLOB=FACTOR[,...]"`` makes the cells of matching attentions take FACTOR
times as long (wall and CPU time alike), without changing what they compute or their cell ids.

It exists to check that ``attnbench compare`` catches a real slowdown of one attention between two runs of the same
suite (docs/metrics.md, "Verdicts on a machine we did not tune on"); like ``ATTNBENCH_CI_SLOWDOWN`` for the CI gate,
it is never set in normal use. The wrapped module times its forward and spins on the CPU for (FACTOR − 1) times it;
for a training step it also times its own backward (from the output's gradient hook to the input's) and spins for
(FACTOR − 1) times that, so forward and forward+backward cells both slow down by FACTOR.
"""
from __future__ import annotations

import fnmatch
import os
import time
from typing import Optional

import torch
from torch import nn

__all__ = ["SLOWDOWN_ENV", "factor_for", "maybe_slowed", "Slowed"]

SLOWDOWN_ENV = "ATTNBENCH_SLOWDOWN"


def factor_for(label: str, spec: Optional[str] = None) -> float:
    """The factor for ``label`` from ``ATTNBENCH_SLOWDOWN`` (1.0 when unset or not matching)."""
    spec = os.environ.get(SLOWDOWN_ENV, "") if spec is None else spec
    for part in filter(None, (p.strip() for p in spec.split(","))):
        pattern, sep, value = part.rpartition("=")
        try:
            factor = float(value)
        except ValueError:
            factor = 0.0
        if not sep or factor < 1:
            raise ValueError(f"{SLOWDOWN_ENV}={spec!r}: expected LABEL_GLOB=FACTOR with FACTOR >= 1")
        if fnmatch.fnmatchcase(label, pattern):
            return factor
    return 1.0


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class Slowed(nn.Module):
    """``inner`` taking ``factor`` times as long; same outputs, same parameters (as ``inner.*``)."""

    def __init__(self, inner: nn.Module, factor: float):
        super().__init__()
        self.inner, self.factor = inner, float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = self.factor - 1.0
        if x.requires_grad and torch.is_grad_enabled():
            started: list[float] = []
            x = x.view_as(x)  # a node whose gradient arrives after the inner backward is done
            x.register_hook(lambda g: _spin(extra * (time.perf_counter() - started[0])) if started else None)
        t0 = time.perf_counter()
        y = self.inner(x)
        _spin(extra * (time.perf_counter() - t0))
        if y.requires_grad and torch.is_grad_enabled():
            y.register_hook(lambda g: started.append(time.perf_counter()))
        return y

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)  # config, cost, ... of the wrapped attention


def maybe_slowed(module: nn.Module, label: str) -> nn.Module:
    """``module``, wrapped in :class:`Slowed` when ``ATTNBENCH_SLOWDOWN`` names its label."""
    factor = factor_for(label)
    return Slowed(module, factor) if factor > 1 else module
