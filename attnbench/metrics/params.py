"""Metric ``params``: parameter counts of the cell's module.

Columns:
    params: elements of every ``nn.Parameter`` (``module.parameters()``, so a parameter shared by two
        submodules is counted once). Buffers (``register_buffer``: index tables, running statistics) are not
        parameters and are excluded, as in timm's and fvcore's parameter counts.
    params_trainable: the same, restricted to parameters with ``requires_grad``.
"""
from __future__ import annotations

from torch import nn

from .base import MetricContext

__all__ = ["DEPENDS_ON", "count_params", "measure"]

#: the cell identity keys the result depends on (the runner reuses it across batch, dtype, device, pass, mode)
DEPENDS_ON = ("attention", "config")


def count_params(module: nn.Module) -> tuple[int, int]:
    """(all, trainable) parameter elements of ``module``; buffers excluded, shared parameters counted once."""
    total = trainable = 0
    for p in module.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable


def measure(ctx: MetricContext) -> dict[str, int]:
    """The ``params`` and ``params_trainable`` columns of the cell's module (independent of shape and batch)."""
    total, trainable = count_params(ctx.make_module())
    return {"params": total, "params_trainable": trainable}
