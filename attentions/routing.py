"""Region partition, top-k region routing and routed attention: the pieces BRA and DBRA share.

Follows BiFormer's legacy ``TopkRouting`` / ``KVGather`` (rayleizhu/BiFormer ``ops/bra_legacy.py``, commit
1697bbb), reused unchanged by DeBiFormer. Shapes use P = n_win² regions (row-major), n tokens per region
(row-major inside a region), k = topk.

``routed_attention`` is the hot path. Its ``impl`` selects how the routed keys/values are reached:

* ``"official"``: ``torch.gather`` on an ``expand``-ed view, as the official code does. Its backward allocates a
  buffer P times the size of K/V (49x at n_win=7) before reducing it; kept to measure that blow-up.
* ``"torch"``: the lean reference; gathers by ``index_select`` on a flattened view, whose backward is an
  ``index_add`` into a buffer the size of K/V. Same values and gradients as ``"official"``.
* ``"triton"``: the fused kernel in :mod:`attentions.kernels.routed_attention` (loads K/V tiles by region index).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "region_partition",
    "region_merge",
    "route_topk",
    "gather_regions",
    "gather_regions_official",
    "routed_attention",
    "ROUTED_IMPLS",
]

ROUTED_IMPLS = ("official", "torch", "triton")


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
    """Lean gather: (B, P, n, C), (B, P, k) -> (B, P, k, n, C); backward allocates only kv's size."""
    B, P, n, C = kv.shape
    k = idx.shape[-1]
    flat = kv.reshape(B * P, n * C)
    rows = (idx + torch.arange(B, device=idx.device).view(B, 1, 1) * P).reshape(-1)
    return flat.index_select(0, rows).view(B, P, k, n, C)


def _routed_attention_torch(q, k, v, idx, num_heads, scale, gather):
    B, P, nq, C = q.shape
    nk, topk, d = k.shape[2], idx.shape[-1], C // num_heads
    kg = gather(k, idx).view(B * P, topk * nk, num_heads, d).transpose(1, 2)  # (BP, m, k·nk, d)
    vg = gather(v, idx).view(B * P, topk * nk, num_heads, d).transpose(1, 2)
    qh = q.reshape(B * P, nq, num_heads, d).transpose(1, 2)  # (BP, m, nq, d)
    attn = torch.softmax((qh * scale) @ kg.transpose(-2, -1), dim=-1)
    out = attn @ vg  # (BP, m, nq, d)
    return out.transpose(1, 2).reshape(B, P, nq, C)


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
        return _routed_attention_torch(q, k, v, idx, num_heads, scale, gather_regions)
    if impl == "official":
        return _routed_attention_torch(q, k, v, idx, num_heads, scale, gather_regions_official)
    if impl == "triton":
        from .kernels.routed_attention import routed_attention_triton

        return routed_attention_triton(q, k, v, idx, num_heads, scale)
    raise ValueError(f"routed_attention: impl={impl!r} is not one of {ROUTED_IMPLS}")
