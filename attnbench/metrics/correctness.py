"""The correctness gate the runner applies before measuring a cell: no speed number for a non-finite output.

:func:`check_finite` runs one forward (eval mode, ``no_grad``) on the cell's own input and raises
:class:`NonFiniteOutputError` if any output element is NaN or ±Inf. The runner records the message as the cell's
``error`` with ``status="failed"``.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import MetricContext

__all__ = ["NonFiniteOutputError", "count_non_finite", "check_finite"]


class NonFiniteOutputError(RuntimeError):
    """The module's output holds NaN or Inf values."""


def count_non_finite(out: torch.Tensor) -> tuple[int, int, int]:
    """(NaN count, ±Inf count, element count) of ``out``."""
    return int(torch.isnan(out).sum()), int(torch.isinf(out).sum()), out.numel()


def _outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    raise TypeError(f"expected the module to return a tensor (or a tuple of tensors), got {type(out).__name__}")


def check_finite(ctx: MetricContext, module: nn.Module) -> None:
    """Raise :class:`NonFiniteOutputError` ("non-finite output: N NaN, M Inf of T elements") unless finite.

    Args:
        ctx: the cell; its seeded input ``ctx.make_input(False)`` (cell batch, dtype, device) is used.
        module: the cell's module, already on ``ctx.device`` / ``ctx.dtype``; left in eval mode.
    """
    module.eval()
    with torch.no_grad():
        outs = _outputs(module(ctx.make_input(False)))
    nan = inf = total = 0
    for out in outs:
        n, i, t = count_non_finite(out)
        nan, inf, total = nan + n, inf + i, total + t
    if nan or inf:
        raise NonFiniteOutputError(f"non-finite output: {nan} NaN, {inf} Inf of {total} elements")
