"""Deformable sampling and the continuous relative-position bias shared by DAT and DBRA.

Both follow DAT (LeapLabTHU/DAT ``DAttentionBaseline``): a grid of reference points, moved by predicted offsets,
samples "agent" (DBRA) or key/value (DAT) tokens from the input with ``grid_sample``; every pixel then attends to
those tokens with a bias read, again by ``grid_sample``, from a (2H-1)x(2W-1) table at the query-minus-key
displacement. Coordinates are grid_sample's normalised [-1, 1], stored as (y, x) like the official code.

The conventions differ between the official codes, so grids are built by :func:`norm_grid` with explicit
numerators and denominators rather than one "right" convention:

=============  ==============================  =========================
code           reference points (Hk x Wk)      query grid (H x W)
=============  ==============================  =========================
DBRA           (i + 0.5) / Hk                  i / (H - 1)
DAT++          (i + 0.5) / (Hk - 1)            i / (H - 1)
DAT v1         (i + 0.5) / Hk                  (i + 0.5) / H
=============  ==============================  =========================
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "norm_grid",
    "align_corners_grid",
    "sample_at",
    "rpe_bias",
    "pixel_to_agent_attention",
    "pixel_to_agent_attention_torch",
]


def _axis(n: int, offset: float, denom: float, device, dtype) -> torch.Tensor:
    # a 1-wide axis has no extent: its single point sits at the centre (the official code would divide by 0)
    if denom == 0:
        return torch.zeros(n, device=device, dtype=dtype)
    return (torch.arange(n, device=device, dtype=dtype) + offset) / denom * 2 - 1


def norm_grid(H: int, W: int, offset: float, denom_h: float, denom_w: float, device=None, dtype=None) -> torch.Tensor:
    """(H, W, 2) grid of (y, x) = ((i + offset) / denom_h · 2 - 1, (j + offset) / denom_w · 2 - 1)."""
    dtype = dtype or torch.float32
    ys = _axis(H, offset, denom_h, device, dtype)
    xs = _axis(W, offset, denom_w, device, dtype)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)


def align_corners_grid(H: int, W: int, device=None, dtype=None) -> torch.Tensor:
    """(H, W, 2) pixel centres for ``grid_sample(align_corners=True)``: i / (H - 1) · 2 - 1."""
    return norm_grid(H, W, 0.0, H - 1, W - 1, device, dtype)


def sample_at(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample ``x`` (N, C, H, W) at ``pos`` (N, Hk, Wk, 2) given as (y, x) -> (N, C, Hk, Wk).

    ``align_corners=True`` and zero padding, as the official DAT and DBRA codes call it.
    """
    return F.grid_sample(x, pos[..., (1, 0)].to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


def rpe_bias(rpe_table: torch.Tensor, q_grid: torch.Tensor, pos: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Attention bias (B·m, Nq, Ns) read from a continuous relative-position table.

    Args:
        rpe_table: (m, Th, Tw), heads grouped per offset group (head j belongs to group j // (m / n_groups)).
        q_grid: (Nq, 2) query coordinates, (y, x).
        pos: (B·n_groups, Ns, 2) sampled key/agent coordinates, (y, x).
        n_groups: offset groups G.
    """
    m, Th, Tw = rpe_table.shape
    BG, Ns, _ = pos.shape
    B = BG // n_groups
    disp = (q_grid.view(1, -1, 1, 2) - pos.view(BG, 1, Ns, 2)) * 0.5  # (BG, Nq, Ns, 2) in [-1, 1]
    table = rpe_table.unsqueeze(0).expand(B, m, Th, Tw).reshape(BG, m // n_groups, Th, Tw)
    bias = F.grid_sample(table, disp[..., (1, 0)].to(table.dtype), mode="bilinear", align_corners=True)
    return bias.reshape(B * m, q_grid.shape[0], Ns)


def pixel_to_agent_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """softmax(q kᵀ · scale + bias) v for (B·m, Nq, d) queries against (B·m, Ns, d) keys and values."""
    logits = (q @ k.transpose(-2, -1)) * scale
    if bias is not None:
        logits = logits + bias.to(logits.dtype)
    return torch.softmax(logits, dim=-1) @ v


def pixel_to_agent_attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pos: torch.Tensor,
    rpe_table: torch.Tensor,
    n_groups: int,
    H: int,
    W: int,
    scale: float,
) -> torch.Tensor:
    """Every pixel's query against all agents, with the RPE bias of an align-corners query grid (DBRA, DAT++).

    This is the reference the fused Triton kernel (:mod:`attentions.kernels.pixel_agent_attention`) must equal.

    Args:
        q: (B·m, H·W, d) pixel queries, row-major pixels.
        k, v: (B·m, Ns, d) agent keys and values.
        pos: (B·G, Ns, 2) agent positions, (y, x), normalised.
        rpe_table: (m, Th, Tw).
        n_groups: G; heads per group m / G.
        H, W: the query grid (pixel i sits at i / (H - 1) · 2 - 1).
        scale: logit scale.

    Returns:
        (B·m, H·W, d).
    """
    q_grid = align_corners_grid(H, W, device=q.device, dtype=pos.dtype).reshape(H * W, 2)
    bias = rpe_bias(rpe_table, q_grid, pos, n_groups)
    return pixel_to_agent_attention(q, k, v, bias, scale)
