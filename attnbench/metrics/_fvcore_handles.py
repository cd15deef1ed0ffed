"""attnbench's fvcore op handles: what ``FlopCountAnalysis`` is told beyond its defaults.

fvcore (facebookresearch/fvcore, ``fvcore/nn/jit_handles.py`` at 3378afe0) counts one fused multiply-add as one
flop, so its totals are multiply-adds (MACs), the convention of every FLOP figure in the BiFormer, DeBiFormer, DAT
and Agent-Attention papers. Its defaults count linear/matmul/bmm/einsum/conv, the norms, bilinear/nearest
upsampling, adaptive average pooling and ``grid_sampler``; every other op counts 0 and is reported by
``unsupported_ops()``. This table adds:

* ``aten::scaled_dot_product_attention``: the two matmuls of attention, ``rows·Lk·(d_qk + d_v)`` MACs with
  ``rows = prod(q.shape[:-1])`` (batch·heads·Lq). fvcore alone counts 0 here (VMamba #296), which would make an
  SDPA-based MHSA look as cheap as its projections. No causal or mask discount, like ``FlopCounterMode``.
* softmax (``aten::softmax``, ``aten::_softmax``, ``aten::log_softmax``): ``softmax_macs_per_element`` MACs per
  output element, 0 by default: the papers' numbers were produced by fvcore, which counts softmax as 0.
* :data:`ZERO_COST_OPS`: ops the papers' convention (and :mod:`attentions.cost`) treats as free, given an
  explicit ``None`` handle (fvcore's "ignore this op") so they drop out of ``unsupported_ops()``. Anything not
  in this table and not handled by fvcore stays visible there; the flops metric reports it in
  ``flops_uncounted_ops``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

__all__ = [
    "ZERO_COST_OPS",
    "SOFTMAX_OPS",
    "sdpa_macs",
    "softmax_handle",
    "routed_attention_handle",
    "pixel_agent_attention_handle",
    "fvcore_handles",
]

#: ops counted as 0 MACs on purpose, by family (the docs print this table)
ZERO_COST_OPS: dict[str, tuple[str, ...]] = {
    "routing and indexing": (
        "aten::topk", "aten::sort", "aten::argsort", "aten::argmax", "aten::argmin", "aten::gather",
        "aten::index_select", "aten::take_along_dim", "aten::scatter", "aten::scatter_add", "aten::index_add",
        "aten::masked_select", "aten::where", "aten::embedding",
    ),
    "element-wise arithmetic": (
        "aten::add", "aten::add_", "aten::sub", "aten::sub_", "aten::rsub", "aten::mul", "aten::mul_",
        "aten::div", "aten::div_", "aten::neg", "aten::pow", "aten::sqrt", "aten::rsqrt", "aten::exp",
        "aten::log", "aten::abs", "aten::reciprocal", "aten::sign", "aten::lt", "aten::le", "aten::ne",
        "aten::minimum", "aten::maximum",
    ),
    "activations": (
        "aten::gelu", "aten::silu", "aten::sigmoid", "aten::tanh", "aten::hardswish", "aten::hardsigmoid",
        "aten::leaky_relu", "aten::softplus", "aten::elu",
    ),
    "reductions (region means, maxima)": ("aten::mean", "aten::sum", "aten::amax", "aten::amin", "aten::min"),
    "creation, copies and layout": (
        "aten::linspace", "aten::meshgrid", "aten::repeat", "aten::repeat_interleave", "aten::tile",
        "aten::expand_as", "aten::clone", "aten::ones_like", "aten::empty_like", "aten::new_ones",
        "aten::view_as", "aten::reshape_as", "aten::flip", "aten::pad", "aten::fill_", "aten::zero_",
        "aten::unflatten", "aten::movedim", "aten::lift_fresh", "aten::alias", "aten::resolve_conj",
        "aten::resolve_neg",
    ),
}

SOFTMAX_OPS = ("aten::softmax", "aten::_softmax", "aten::log_softmax")

Handle = Optional[Callable[[list, list], Any]]


def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(value)
    if shape is None:
        raise ValueError(f"fvcore handle: no static shape for traced value {value!r}")
    return list(shape)


def sdpa_macs(inputs: list, outputs: list) -> int:
    """MACs of ``scaled_dot_product_attention(q, k, v)``: QKᵀ (rows·Lk·d_qk) plus AV (rows·Lk·d_v)."""
    q, k, v = (_shape(inputs[i]) for i in range(3))
    rows, lk = math.prod(q[:-1]), k[-2]
    return rows * lk * q[-1] + rows * lk * v[-1]


def softmax_handle(macs_per_element: int) -> Callable[[list, list], int]:
    """A softmax handle charging ``macs_per_element`` per output element (0: the papers' convention)."""

    def softmax_macs(inputs: list, outputs: list) -> int:
        return macs_per_element * math.prod(_shape(outputs[0]))

    return softmax_macs


def routed_attention_handle(inputs: list, outputs: list) -> int:
    """MACs of the ``attentions::routed_attention`` custom op (the Triton path): its two matmuls. Forward only, as
    fvcore counts; ``FlopCounterMode`` also counts the backward op, at 2.5× the forward in FLOPs (torch's SDPA
    convention, docs/kernels.md §3)."""
    from attentions.kernels.routed_attention import routed_attention_macs

    return routed_attention_macs(_shape(inputs[0]), _shape(inputs[1]), _shape(inputs[3]))


def pixel_agent_attention_handle(inputs: list, outputs: list) -> int:
    """MACs of the ``attentions::pixel_agent_attention`` custom op: its two matmuls (the fused RPE lookup is not
    counted; the torch path's ``grid_sampler`` is, so counts taken on the Triton path are lower by that part)."""
    from attentions.kernels.pixel_agent_attention import pixel_agent_attention_macs

    return pixel_agent_attention_macs(_shape(inputs[0]), _shape(inputs[1]))


def fvcore_handles(softmax_macs_per_element: int = 0) -> dict[str, Handle]:
    """The ``aten::op -> handle`` table to pass to ``FlopCountAnalysis.set_op_handle(**table)``."""
    table: dict[str, Handle] = {op: None for ops in ZERO_COST_OPS.values() for op in ops}
    table["aten::scaled_dot_product_attention"] = sdpa_macs
    table["attentions::routed_attention"] = routed_attention_handle
    table["attentions::pixel_agent_attention"] = pixel_agent_attention_handle
    softmax = softmax_handle(softmax_macs_per_element)
    table.update({op: softmax for op in SOFTMAX_OPS})
    return table
