"""Region partition, top-k region routing and routed attention: the pieces BRA and DBRA share.

Follows BiFormer's legacy ``TopkRouting`` / ``KVGather`` (rayleizhu/BiFormer ``ops/bra_legacy.py``, commit
1697bbb), reused unchanged by DeBiFormer. Shapes use P = n_win² regions (row-major), n tokens per region
(row-major inside a region), k = topk.

``routed_attention`` is the hot path. Its ``impl`` selects how the routed keys/values are reached:

* ``"official"``: ``torch.gather`` on an ``expand``-ed view, as the official code does. Its backward allocates a
  buffer P times the size of K/V (49x at n_win=7) before reducing it; kept to measure that blow-up.
* ``"torch"``: the lean path (what CPU users run). A custom autograd Function saves only q, k, v and the
  routing; forward and backward run over chunks of query regions, gathering each chunk's K/V by ``index_select``
  on a flattened view and recomputing its attention matrix in the backward, and scatter dK/dV by ``index_add_``
  into buffers the size of k and v. Nothing it holds grows with P or topk beyond one chunk. Same values and
  gradients as ``"official"`` (float32: within 1e-6). Under ``torch.jit.trace`` (fvcore) it runs the same maths
  as plain ops, with :func:`gather_regions`, so counters see the matmuls.
* ``"triton"``: the fused kernel in :mod:`attentions.kernels.routed_attention` (loads K/V tiles by region index).

Which one a module's ``impl="auto"`` runs is decided in :mod:`attentions.backends` (``can_run_routed_triton``).
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Literal

import torch
from torch.autograd.function import once_differentiable

from .config import AttentionConfig, require

__all__ = [
    "region_partition",
    "region_merge",
    "route_topk",
    "gather_regions",
    "gather_regions_official",
    "routed_attention",
    "ROUTED_IMPLS",
    "RoutedImpl",
    "RoutedConfig",
]

#: the ``impl`` values of BRA and DBRA: a routed-attention backend, or "auto" (:mod:`attentions.backends` picks)
RoutedImpl = Literal["auto", "torch", "official", "triton"]
#: the backends :func:`routed_attention` runs: the same vocabulary without "auto"
ROUTED_IMPLS = tuple(sorted(set(typing.get_args(RoutedImpl)) - {"auto"}))


@dataclasses.dataclass(frozen=True)
class RoutedConfig(AttentionConfig):
    """The hyperparameters of bi-level routing, shared by BRA and DBRA (each documents them for its own tokens).

    Args:
        n_win: regions per side S (P = S² regions).
        topk: routed regions per query region, 1 <= topk <= S².
    """

    n_win: int = 7
    topk: int = 1

    def validate(self) -> None:
        super().validate()
        require(self.n_win >= 1, "n_win", self.n_win, "an integer >= 1 (regions per side)")
        p = self.n_win**2
        require(1 <= self.topk <= p, "topk", self.topk, f"an integer in [1, n_win²={p}] (n_win={self.n_win})")


def region_partition(x: torch.Tensor, n_win: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, n_win², (H/n_win)·(W/n_win), C); H and W must be multiples of n_win."""
    B, H, W, C = x.shape
    h, w = H // n_win, W // n_win
    x = x.view(B, n_win, h, n_win, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, n_win * n_win, h * w, C)


def region_merge(x: torch.Tensor, n_win: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`region_partition`: (B, n_win², h·w, C) -> (B, H, W, C)."""
    B, _, _, C = x.shape
    h, w = H // n_win, W // n_win
    x = x.view(B, n_win, n_win, h, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


def route_topk(q_region: torch.Tensor, k_region: torch.Tensor, topk: int, scale: float) -> torch.Tensor:
    """Indices (B, P, topk) of the regions with the highest affinity ``(q_r·scale) k_rᵀ``.

    ``q_region`` (B, P, C) and ``k_region`` (B, P, C) are region descriptors (mean over a region's tokens). The
    routing is hard and non-differentiable, as in the official code: inputs are detached. The softmax'd routing
    weights the official ``TopkRouting`` computes are unused in every released model, so they are not computed.
    """
    logits = (q_region.detach() * scale) @ k_region.detach().transpose(-2, -1)  # (B, P, P)
    return torch.topk(logits, k=topk, dim=-1).indices


def gather_regions_official(kv: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Official ``KVGather``: (B, P, n, C), (B, P, k) -> (B, P, k, n, C) by gather on an expanded view."""
    B, P, n, C = kv.shape
    k = idx.shape[-1]
    src = kv.view(B, 1, P, n, C).expand(B, P, P, n, C)
    index = idx.view(B, P, k, 1, 1).expand(B, P, k, n, C)
    return torch.gather(src, dim=2, index=index)


def gather_regions(kv: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Lean gather: (B, P, n, C), (B, P, k) -> (B, P, k, n, C), equal to :func:`gather_regions_official`.

    ``index_select`` on the (B·P, n·C) view; its backward is one ``index_add`` into a zero buffer of kv's size,
    where the official expanded gather's backward fills a (B, P, P, n, C) buffer and sums it over dim 1.
    """
    B, P, n, C = kv.shape
    k = idx.shape[-1]
    flat = kv.reshape(B * P, n * C)
    rows = (idx + torch.arange(B, device=idx.device).view(B, 1, 1) * P).reshape(-1)
    return flat.index_select(0, rows).view(B, P, k, n, C)


def _attend_plain(q, k, v, idx, num_heads, scale, gather):
    """softmax((q·scale) K_gᵀ) V_g with K_g, V_g gathered by ``gather``; autograd records every step."""
    B, P, nq, C = q.shape
    nk, topk, d = k.shape[2], idx.shape[-1], C // num_heads
    kg = gather(k, idx).view(B * P, topk * nk, num_heads, d).transpose(1, 2)  # (BP, m, k·nk, d)
    vg = gather(v, idx).view(B * P, topk * nk, num_heads, d).transpose(1, 2)
    qh = q.reshape(B * P, nq, num_heads, d).transpose(1, 2)  # (BP, m, nq, d)
    attn = torch.softmax((qh * scale) @ kg.transpose(-2, -1), dim=-1)
    out = attn @ vg  # (BP, m, nq, d)
    return out.transpose(1, 2).reshape(B, P, nq, C)


#: elements of one chunk's temporaries (gathered K/V and attention matrix) in the lean path: 2 MiB in float32
_CHUNK_ELEMENTS = 1 << 19


def _chunks(n_regions: int, num_heads: int, nq: int, topk: int, nk: int, C: int):
    """(start, stop) of the query-region chunks; a region's temporaries are its gathered K, V and its probs."""
    per_region = topk * nk * (2 * C + num_heads * nq)
    step = max(1, _CHUNK_ELEMENTS // per_region)
    for r0 in range(0, n_regions, step):
        yield r0, min(n_regions, r0 + step)


def _chunk_probs(qc, kf, vf, rows, num_heads, scale):
    """Recomputable part of one chunk: heads-split scaled q, gathered K/V, softmax probabilities."""
    c, nq, C = qc.shape
    nk, d = kf.shape[1], C // num_heads
    kg = kf.index_select(0, rows.reshape(-1)).view(c, -1, num_heads, d).transpose(1, 2)  # (c, m, k·nk, d)
    vg = vf.index_select(0, rows.reshape(-1)).view(c, -1, num_heads, d).transpose(1, 2)
    qs = qc.reshape(c, nq, num_heads, d).transpose(1, 2) * scale  # (c, m, nq, d)
    probs = torch.softmax(qs @ kg.transpose(-2, -1), dim=-1)  # (c, m, nq, k·nk)
    return qs, kg, vg, probs


class _LeanRoutedAttention(torch.autograd.Function):
    """Routed attention that stores only q, k, v and the routing, and recomputes the rest chunk by chunk.

    The forward runs over chunks of query regions, so the gathered K/V and the attention matrix exist for one
    chunk at a time and are not saved; the backward recomputes them per chunk and scatters dK, dV with
    ``index_add_`` into buffers the size of k and v. Peak memory no longer grows with topk or P.
    """

    @staticmethod
    def forward(ctx, q, k, v, rows, num_heads, scale):
        BP, nq, C = q.shape
        out = q.new_empty(BP, nq, C)
        for r0, r1 in _chunks(BP, num_heads, nq, rows.shape[1], k.shape[1], C):
            _, _, vg, probs = _chunk_probs(q[r0:r1], k, v, rows[r0:r1], num_heads, scale)
            out[r0:r1] = (probs @ vg).transpose(1, 2).reshape(r1 - r0, nq, C)
        ctx.save_for_backward(q, k, v, rows)
        ctx.num_heads, ctx.scale = num_heads, scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, rows = ctx.saved_tensors
        m, scale = ctx.num_heads, ctx.scale
        BP, nq, C = q.shape
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for r0, r1 in _chunks(BP, m, nq, rows.shape[1], k.shape[1], C):
            c, flat_rows = r1 - r0, rows[r0:r1].reshape(-1)
            qs, kg, vg, probs = _chunk_probs(q[r0:r1], k, v, rows[r0:r1], m, scale)
            go = grad_out[r0:r1].reshape(c, nq, m, C // m).transpose(1, 2)  # (c, m, nq, d)
            dv.index_add_(0, flat_rows, _merge_heads(probs.transpose(-2, -1) @ go, k.shape[1]))
            # same formula (and kernel) autograd applies to softmax
            ds = torch.ops.aten._softmax_backward_data(go @ vg.transpose(-2, -1), probs, -1, probs.dtype)
            dq[r0:r1] = ((ds @ kg) * scale).transpose(1, 2).reshape(c, nq, C)
            dk.index_add_(0, flat_rows, _merge_heads(ds.transpose(-2, -1) @ qs, k.shape[1]))
        return dq, dk, dv, None, None, None


def _merge_heads(t: torch.Tensor, nk: int) -> torch.Tensor:
    """(c, m, k·nk, d) -> (c·k, nk, m·d): per routed region, heads concatenated head-major."""
    c, m, kn, d = t.shape
    return t.transpose(1, 2).reshape(c * (kn // nk), nk, m * d)


def _routed_attention_lean(q, k, v, idx, num_heads, scale):
    B, P, nq, C = q.shape
    rows = idx + torch.arange(B, device=idx.device).view(B, 1, 1) * P  # region index in the flattened (B·P)
    out = _LeanRoutedAttention.apply(
        q.reshape(B * P, nq, C), k.reshape(B * P, -1, C), v.reshape(B * P, -1, C), rows.view(B * P, -1),
        num_heads, scale,
    )
    return out.view(B, P, nq, C)


def routed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    idx: torch.Tensor,
    num_heads: int,
    scale: float,
    impl: str = "torch",
) -> torch.Tensor:
    """Each region's queries attend to the tokens of its ``topk`` routed regions.

    Args:
        q: (B, P, nq, C) queries, grouped by region.
        k, v: (B, P, nk, C) keys and values, grouped by region.
        idx: (B, P, topk) routed region indices (from :func:`route_topk`).
        num_heads: heads; channels split head-major, C = num_heads · d.
        scale: logit scale (BRA/DBRA use C^-0.5, not d^-0.5).
        impl: ``"official"``, ``"torch"`` or ``"triton"`` (see the module docstring).

    Returns:
        (B, P, nq, C).
    """
    if impl == "torch":
        if torch.jit.is_tracing():  # tracers (fvcore) see through plain ops, not through a Python Function
            return _attend_plain(q, k, v, idx, num_heads, scale, gather_regions)
        return _routed_attention_lean(q, k, v, idx, num_heads, scale)
    if impl == "official":
        return _attend_plain(q, k, v, idx, num_heads, scale, gather_regions_official)
    if impl == "triton":
        from .kernels.routed_attention import routed_attention_triton

        return routed_attention_triton(q, k, v, idx, num_heads, scale)
    raise ValueError(f"routed_attention: impl={impl!r} is not one of {ROUTED_IMPLS}")
