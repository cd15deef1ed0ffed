"""Metric ``flops``: three FLOP counts of one forward pass side by side, and the ops none of them counted.

All three are for **batch 1** at the cell's H×W, forward only, counted by running the module once per counter on
a seeded (1, H, W, C) input (a model cell: a (1, 3, H, W) image, and no analytic count), by default on the CPU
in float32 whatever the cell's device and dtype: the counts depend only on shapes, so counting once in one place
makes them identical across cells, machines and dtypes (and the CPU is always there). Setting ``device: cell``
counts on the cell's device and dtype instead, for modules that only run there (a CUDA-only kernel).

Columns:
    macs_fvcore: fvcore ``FlopCountAnalysis`` total, multiply-adds, with the handles of
        :mod:`attnbench.metrics._fvcore_handles` (SDPA counted; softmax, top-k, gather and element-wise ops 0).
    flops_torch: ``torch.utils.flop_counter.FlopCounterMode`` total, FLOPs = 2 × MACs of mm/bmm/addmm/baddbmm,
        convolutions and SDPA; every other op (norms, grid_sample, interpolation, softmax) counts 0. On the CPU
        ``aten._scaled_dot_product_flash_attention_for_cpu`` has no formula in torch (pytorch #195460); we map it
        to torch's own ``sdpa_flop_count`` so a CPU count equals the CUDA one.
    macs_analytic, macs_analytic_<part>, keys_per_query: the module's ``cost(H, W)`` (absent for modules
        without an analytic model).
    flops_uncounted_ops: comma-joined, sorted op names that fvcore left unsupported (no default handle, not in
        our table) and that FlopCounterMode did not count under the same qualified name; "" if none.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from ._fvcore_handles import fvcore_handles
from ..core.validation import SettingsModel
from ._settings import read_settings
from .base import MetricContext

__all__ = ["DEPENDS_ON", "FvcoreCount", "count_fvcore", "count_torch", "count_analytic", "uncounted_ops", "measure"]



class Settings(SettingsModel):
    """``settings.flops``: MACs charged per softmax element, and where to count (``cpu`` in float32, or the
    cell's own device and dtype)."""

    softmax_macs_per_element: Annotated[int, Field(ge=0)] = 0
    device: Literal["cpu", "cell"] = "cpu"


DEFAULTS = Settings().model_dump()
#: the cell identity keys the counts depend on (batch 1, shape-only: the runner reuses them across the rest)
DEPENDS_ON = ("attention", "config", "height", "width")


@dataclasses.dataclass(frozen=True)
class FvcoreCount:
    """fvcore's total MACs, MACs by operator, and unsupported op name -> number of calls."""

    total: int
    by_operator: dict[str, int]
    unsupported: dict[str, int]


def count_fvcore(module: nn.Module, x: torch.Tensor, softmax_macs_per_element: int = 0) -> FvcoreCount:
    """fvcore MACs of ``module(x)`` with attnbench's handles; warnings silenced, unsupported ops captured.

    Args:
        module: in eval mode; traced with ``torch.jit.trace`` by fvcore (one forward).
        x: the input; its batch is part of the count.
        softmax_macs_per_element: MACs charged per softmax output element (0 = the papers' convention).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit deprecation and TracerWarnings from fvcore's trace
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(module, (x,))
        analysis.set_op_handle(**fvcore_handles(softmax_macs_per_element))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        with torch.no_grad():
            total = int(analysis.total())
        by_operator = {k: int(v) for k, v in analysis.by_operator().items()}
        unsupported = dict(Counter(analysis.unsupported_ops()))
    return FvcoreCount(total, by_operator, unsupported)


def _sdpa_cpu_formula(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _torch_custom_mapping() -> dict:
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _sdpa_cpu_formula} if op is not None else {}


def _qualified(op: Any) -> str:
    """'aten.addmm' (an OpOverloadPacket) -> 'aten::addmm', fvcore's spelling."""
    return str(op).replace(".", "::", 1)


def count_torch(module: nn.Module, x: torch.Tensor) -> tuple[int, dict[str, int]]:
    """``FlopCounterMode`` FLOPs (2 × MACs) of ``module(x)`` under ``no_grad``, and FLOPs by qualified op name."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_torch_custom_mapping())
    with torch.no_grad(), counter:
        module(x)
    by_op = {_qualified(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


def count_analytic(module: nn.Module, H: int, W: int) -> dict[str, Any]:
    """The analytic columns from ``module.cost(H, W)``; ``{}`` when the module has no cost model."""
    cost_fn = getattr(module, "cost", None)
    if not callable(cost_fn):
        return {}
    try:
        cost = cost_fn(H, W)
    except NotImplementedError:
        return {}
    out: dict[str, Any] = {"macs_analytic": int(cost.total)}
    out.update({f"macs_analytic_{part}": int(v) for part, v in cost.macs.items()})
    out["keys_per_query"] = float(cost.keys_per_query)
    return out


def uncounted_ops(fvcore_unsupported: dict[str, int], torch_counted: dict[str, int]) -> list[str]:
    """Sorted op names fvcore left unsupported that FlopCounterMode did not count either."""
    return sorted(op for op in fvcore_unsupported if torch_counted.get(op, 0) == 0)


def _counting_setup(ctx: MetricContext, device: str) -> tuple[nn.Module, torch.Tensor]:
    dev, dtype = (torch.device("cpu"), torch.float32) if device == "cpu" else (ctx.device, ctx.dtype)
    module = ctx.make_module().to(device=dev, dtype=dtype).eval()
    gen = torch.Generator(device="cpu").manual_seed(ctx.seed)
    x = torch.randn(ctx.input_shape(1), generator=gen).to(device=dev, dtype=dtype)
    return module, x


def measure(ctx: MetricContext) -> dict[str, Any]:
    """``macs_fvcore``, ``flops_torch``, the analytic columns and ``flops_uncounted_ops`` of the cell (batch 1)."""
    s = read_settings(ctx, "flops", Settings)
    module, x = _counting_setup(ctx, s["device"])
    fv = count_fvcore(module, x, s["softmax_macs_per_element"])
    flops_torch, torch_by_op = count_torch(module, x)
    row: dict[str, Any] = {"macs_fvcore": fv.total, "flops_torch": flops_torch}
    row.update(count_analytic(module, ctx.height, ctx.width))
    row["flops_uncounted_ops"] = ",".join(uncounted_ops(fv.unsupported, torch_by_op))
    return row
