"""Multiply-adds and memory traffic of one forward pass, per cost part (the mechanism's ``attentions.profiling``
scopes), counted operator by operator under a ``TorchDispatchMode``.

MACs follow the conventions of the analytic cost model and fvcore (``attentions/cost.py``, docs/metrics.md): matrix
products and convolutions m·n·k (no bias), SDPA rows·Lk·(d_qk + d_v), LayerNorm 5 per element, bilinear
``grid_sample`` and bilinear interpolation 4 per output element, adaptive average pooling 1 per input element;
softmax, element-wise ops, reductions, top-k and copies 0. So, per part, the count equals ``cost(H, W).macs`` times
the batch (a test pins that on the resolution sweep's grids): the scopes put every counted op where ``cost()`` puts
its MACs.

Bytes are the compulsory traffic of an unfused execution: every operator that is not a view reads each tensor
argument and writes each tensor result once (element count × element size; no cache reuse). It is the denominator
of the arithmetic intensity a roofline point needs; real traffic is lower where caches hold data, higher where an
operator re-reads it.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from attentions.profiling import current_part, observe_parts

__all__ = ["OTHER", "PartCounts", "count_parts"]

#: the part that owns everything outside every scope
OTHER = "other"


def _numel(shape) -> int:
    return math.prod(int(s) for s in shape)


def _mm(args, out) -> int:  # (m, k) @ (k, n)
    a, b = args[-2], args[-1]
    return a.shape[0] * a.shape[1] * b.shape[1]


def _bmm(args, out) -> int:
    a, b = args[-2], args[-1]
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _conv(args, out) -> int:  # weight (C_out, C_in / groups, *kernel): each output element C_in/groups·kernel MACs
    w = args[1]
    return out.numel() * w.shape[1] * _numel(w.shape[2:])


def _sdpa(args, out) -> int:
    q, k, v = args[0], args[1], args[2]
    rows = _numel(q.shape[:-1])
    return rows * k.shape[-2] * (q.shape[-1] + v.shape[-1])


def _first_out(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _per_output(n: int) -> Callable[[Any, Any], int]:
    return lambda args, out: n * _first_out(out).numel()


def _formulas() -> dict[Any, Callable[[Any, Any], int]]:
    aten = torch.ops.aten
    table: dict[Any, Callable[[Any, Any], int]] = {
        aten.mm.default: _mm, aten.addmm.default: _mm, aten.bmm.default: _bmm, aten.baddbmm.default: _bmm,
        aten.convolution.default: _conv,
        aten.native_layer_norm.default: _per_output(5),
        aten.grid_sampler_2d.default: _per_output(4),
        aten.upsample_bilinear2d.default: _per_output(4),
        aten._adaptive_avg_pool2d.default: lambda args, out: args[0].numel(),
    }
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                 "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"):
        op = getattr(aten, name, None)
        if op is not None:
            table[op.default] = _sdpa
    if hasattr(aten, "upsample_bilinear2d") and hasattr(aten.upsample_bilinear2d, "vec"):
        table[aten.upsample_bilinear2d.vec] = _per_output(4)
    return table


class PartCounts(TorchDispatchMode):
    """Counts MACs and bytes per innermost open part; ``macs``/``bytes``: part (or ``other``) -> count."""

    def __init__(self):
        super().__init__()
        self.macs: dict[str, int] = defaultdict(int)
        self.bytes: dict[str, int] = defaultdict(int)
        self._formulas = _formulas()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        where = current_part() or OTHER
        formula = self._formulas.get(func)
        if formula is not None:
            self.macs[where] += int(formula(args, out))
        if not func.is_view:
            tensors = [t for t in tree_flatten((args, kwargs or {}, out))[0] if isinstance(t, torch.Tensor)]
            self.bytes[where] += sum(t.numel() * t.element_size() for t in tensors)
        return out


def count_parts(module: torch.nn.Module, x: torch.Tensor) -> PartCounts:
    """MACs and bytes per part of one ``module(x)`` forward in eval mode under ``no_grad``."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), observe_parts(), PartCounts() as counts:
            module(x)
    finally:
        module.train(was_training)
    return counts
