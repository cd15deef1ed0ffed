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
from torch import nn
from torch.autograd.function import once_differentiable

from .profiling import part

__all__ = [
    "LayerNormProxy",
    "norm_grid",
    "align_corners_grid",
    "sample_at",
    "rpe_bias",
    "pixel_to_agent_attention",
    "pixel_to_agent_attention_torch",
    "pixel_to_agent_attention_lean",
]


class LayerNormProxy(nn.Module):
    """LayerNorm (eps 1e-5) over the channels of an NCHW map, as in the offset networks of DAT and DBRA (the official
    ``LayerNormProxy``, parameter ``norm``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


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
    with part(None, "offsets_sampling_rpe"):
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
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, rpe_table: torch.Tensor,
    n_groups: int, H: int, W: int, scale: float,
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


# -- lean back attention ------------------------------------------------------------------------------------------

#: elements of one pixel chunk's temporaries (logits-sized and displacement-sized) in the lean back attention
_PIXEL_CHUNK_ELEMENTS = 1 << 20


def _pixel_chunks(n_pixels: int, B: int, m: int, G: int, Ns: int, chunk_pixels: int | None):
    """(start, stop) of the pixel chunks; one pixel costs B·Ns·m logit-sized and B·Ns·G·2 displacement elements."""
    step = chunk_pixels or max(1, _PIXEL_CHUNK_ELEMENTS // (B * Ns * (m + 2 * G)))
    for p0 in range(0, n_pixels, step):
        yield p0, min(n_pixels, p0 + step)


def _chunk_probs(qc, k, q_xy, pos_xy, table, scale):
    """One pixel chunk of the back attention, op for op as :func:`pixel_to_agent_attention_torch`.

    Args:
        qc: (B, m, c, d) the chunk's queries; k: (B, m, Ns, d); q_xy: (c, 2) the chunk's query coordinates and
        pos_xy: (B·G, Ns, 2) the agent positions, both halved and in grid_sample's (x, y) order;
        table: (B·G, m/G, Th, Tw) the RPE table repeated per batch element.
    Returns:
        grid (B·G, c, Ns, 2), the (x, y) sampling grid of the bias, and probs (B, m, c, Ns).
    """
    B, m, c, _ = qc.shape
    BG, Ns, _ = pos_xy.shape
    # The reference computes (q - pos)·0.5 and then swaps (y, x); halving and swapping the operands first gives the
    # same numbers (halving is exact) in one op and without a gather. In-place steps on fresh results keep at most
    # four chunk-sized tensors alive.
    with part(None, "offsets_sampling_rpe"):
        grid = (q_xy.view(1, c, 1, 2) - pos_xy.view(BG, 1, Ns, 2)).to(table.dtype)
        bias = F.grid_sample(table, grid, mode="bilinear", align_corners=True).view(B, m, c, Ns)
    logits = (qc @ k.transpose(-2, -1)).mul_(scale)
    logits += bias.to(logits.dtype)
    del bias
    return grid, torch.softmax(logits, dim=-1)


def _chunk_backward(qc, go, k, v, q_xy, pos_xy, table, scale, acc, dq_c):
    """Recompute one chunk and add its share to the accumulators ``acc`` = [dk, dv, dtable, dpos_xy].

    ``dq_c`` (the chunk's rows of dq) is written in place; a ``None`` accumulator is not computed.
    """
    dk, dv, dtable, dpos_xy = acc
    grid, probs = _chunk_probs(qc, k, q_xy, pos_xy, table, scale)
    dv += probs.transpose(-2, -1) @ go
    dlogits = torch.ops.aten._softmax_backward_data(go @ v.transpose(-2, -1), probs, -1, probs.dtype)
    del probs
    if dtable is not None or dpos_xy is not None:  # the bias's gradient is dlogits itself
        dbias = dlogits.to(table.dtype).view(table.shape[0], table.shape[1], qc.shape[2], -1)
        with part(None, "offsets_sampling_rpe"):
            dt, dgrid = torch.ops.aten.grid_sampler_2d_backward(
                dbias, table, grid, 0, 0, True, [dtable is not None, dpos_xy is not None]
            )  # bilinear, zeros padding, align_corners
        del dbias, grid
        if dtable is not None:
            dtable += dt
        if dpos_xy is not None:  # grid = (q - pos) · 0.5: summed over pixels here, halved and negated at the end
            dpos_xy += dgrid.to(dpos_xy.dtype).sum(1)
    dscaled = dlogits.mul_(scale)
    if dq_c is not None:
        dq_c.copy_(dscaled @ k)
    dk += dscaled.transpose(-2, -1) @ qc


def _like_layout(q: torch.Tensor) -> torch.Tensor:
    """An empty (B, m, N, d) tensor laid out like ``q``: pixel-minor (B, C, H, W) memory if q is, else contiguous."""
    B, m, N, d = q.shape
    if q.stride(-2) == 1 and q.stride(-1) != 1:
        return q.new_empty(B, m, d, N).transpose(-1, -2)
    return q.new_empty(B, m, N, d)


def _out_buffer(q: torch.Tensor, pixel_major: bool) -> torch.Tensor:
    """An empty (B, m, N, d) output: contiguous, or a view of (B, N, m·d) memory (a channels-last map)."""
    B, m, N, d = q.shape
    return q.new_empty(B, N, m, d).transpose(1, 2) if pixel_major else q.new_empty(B, m, N, d)


class _LeanPixelAgentAttention(torch.autograd.Function):
    """Back attention that saves only its inputs and recomputes bias, logits and softmax per pixel chunk.

    The displacement, bias, logit and probability tensors (each B·m·H·W·Ns) exist for one chunk of pixels at a
    time, in the forward and again in the backward. The backward applies the same formulas autograd applies to
    the reference ops (``_softmax_backward_data``, ``grid_sampler_2d_backward``), accumulating dk, dv, the RPE
    table's and the positions' gradients over the chunks.
    """

    @staticmethod
    def forward(ctx, q, k, v, pos, rpe_table, n_groups, H, W, scale, chunk_pixels, pixel_major):
        B, m, N, _ = q.shape
        q_xy, pos_xy, table = _xy_grids(pos, rpe_table, n_groups, H, W, B)
        out = _out_buffer(q, pixel_major)
        for p0, p1 in _pixel_chunks(N, B, m, n_groups, k.shape[2], chunk_pixels):
            _, probs = _chunk_probs(q[:, :, p0:p1], k, q_xy[p0:p1], pos_xy, table, scale)
            out[:, :, p0:p1] = probs @ v
        ctx.save_for_backward(q, k, v, pos, rpe_table)
        ctx.args = (n_groups, H, W, scale, chunk_pixels)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, pos, rpe_table = ctx.saved_tensors
        n_groups, H, W, scale, chunk_pixels = ctx.args
        need_q, need_k, need_v, need_pos, need_table = ctx.needs_input_grad[:5]
        B, m, N, _ = q.shape
        q_xy, pos_xy, table = _xy_grids(pos, rpe_table, n_groups, H, W, B)
        dq = _like_layout(q) if need_q else None

        def zeros(t):  # sums over chunks in at least float32, as the one-kernel reductions of the reference do
            return torch.zeros(t.shape, dtype=torch.promote_types(t.dtype, torch.float32), device=t.device)

        acc = [zeros(k), zeros(v), zeros(table) if need_table else None, zeros(pos) if need_pos else None]
        for p0, p1 in _pixel_chunks(N, B, m, n_groups, k.shape[2], chunk_pixels):
            _chunk_backward(q[:, :, p0:p1], grad_out[:, :, p0:p1], k, v, q_xy[p0:p1], pos_xy, table, scale, acc,
                            dq[:, :, p0:p1] if need_q else None)
        dk, dv, dtable, dpos_xy = acc
        dk, dv = (dk.to(k.dtype) if need_k else None), (dv.to(v.dtype) if need_v else None)
        dtable = dtable.view(B, *rpe_table.shape).sum(0).to(rpe_table.dtype) if need_table else None
        dpos = dpos_xy.flip(-1).mul_(-0.5).to(pos.dtype) if need_pos else None
        return dq, dk, dv, dpos, dtable, None, None, None, None, None, None


def _xy_grids(pos, rpe_table, n_groups, H, W, B):
    """Halved query grid (H·W, 2) and positions (B·G, Ns, 2) in (x, y) order; the table as (B·G, m/G, Th, Tw)."""
    q_xy = align_corners_grid(H, W, device=pos.device, dtype=pos.dtype).reshape(H * W, 2).flip(-1) * 0.5
    m, Th, Tw = rpe_table.shape
    table = rpe_table.unsqueeze(0).expand(B, m, Th, Tw).reshape(B * n_groups, m // n_groups, Th, Tw)
    return q_xy, pos.flip(-1) * 0.5, table


def pixel_to_agent_attention_lean(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pos: torch.Tensor,
    rpe_table: torch.Tensor,
    n_groups: int,
    H: int,
    W: int,
    scale: float,
    *,
    chunk_pixels: int | None = None,
) -> torch.Tensor:
    """:func:`pixel_to_agent_attention_torch` in bounded memory: same arguments, values and gradients.

    A custom autograd Function runs over chunks of pixels and saves only q, k, v, pos and ``rpe_table``; the
    (B·m, H·W, Ns) bias, logits and probabilities and the (B·G, H·W, Ns, 2) displacements are never whole, in the
    forward or the backward (which recomputes them per chunk). Gradients reach q, k, v, ``pos`` and ``rpe_table``
    as in the reference; float32 results differ from it only by the order of the sums over pixels.

    Args:
        q: (B·m, H·W, d), or (B, m, H·W, d), which may be a strided view such as ``q.view(B, m, d, H·W)
            .transpose(-1, -2)`` of a (B, C, H, W) map; q's gradient has q's layout, so no copy is made.
        k, v: (B·m, Ns, d), or (B, m, Ns, d) when q is 4-D.
        pos, rpe_table, n_groups, H, W, scale: as in :func:`pixel_to_agent_attention_torch`.
        chunk_pixels: pixels per chunk; by default, as many as keep a chunk's logits and displacements within
            2^20 elements (668 pixels, 5 chunks, at DBRA stage 1 with batch 8).

    Returns:
        (B·m, H·W, d) contiguous; for 4-D q, (B, m, H·W, d) as a view of (B, H·W, m·d) memory, i.e. of a
        (B, H, W, C) map with heads concatenated head-major, which a following 1×1 projection reads in place.
    """
    if torch.jit.is_tracing():  # tracers (fvcore) see through plain ops, not through a Python Function
        return _reference_any_rank(q, k, v, pos, rpe_table, n_groups, H, W, scale)
    B, m = pos.shape[0] // n_groups, rpe_table.shape[0]
    if q.dim() == 4:
        return _LeanPixelAgentAttention.apply(q, k, v, pos, rpe_table, n_groups, H, W, scale, chunk_pixels, True)
    q4, k4, v4 = (t.view(B, m, *t.shape[1:]) for t in (q, k, v))
    out = _LeanPixelAgentAttention.apply(q4, k4, v4, pos, rpe_table, n_groups, H, W, scale, chunk_pixels, False)
    return out.view(q.shape)


def _reference_any_rank(q, k, v, pos, rpe_table, n_groups, H, W, scale):
    """:func:`pixel_to_agent_attention_torch` for 3-D or 4-D (B, m, N, d) q, k, v."""
    if q.dim() == 3:
        return pixel_to_agent_attention_torch(q, k, v, pos, rpe_table, n_groups, H, W, scale)
    B, m, N, d = q.shape
    out = pixel_to_agent_attention_torch(q.reshape(B * m, N, d), k.reshape(B * m, -1, d), v.reshape(B * m, -1, d),
                                         pos, rpe_table, n_groups, H, W, scale)
    return out.view(B, m, N, d)
