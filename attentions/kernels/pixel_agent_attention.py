"""Fused pixel-to-agent attention with DBRA's bilinear relative-position bias computed on the fly.

Paper: "DeBiFormer: Vision Transformer with Deformable Agent Bi-level Routing Attention", arXiv 2410.08582
(maclong01/DeBiFormer commit 1ceb090, ``classification/debiformer.py``, ``DeBiLevelRoutingAttention``); the
continuous RPE-table bias comes from "Vision Transformer with Deformable Attention" (DAT), arXiv 2201.00520
(LeapLabTHU/DAT).

Same signature and semantics as :func:`attentions.deformable.pixel_to_agent_attention_torch`::

    out = softmax(q kᵀ · scale + bias) v,   bias[n, s] = bilinear(rpe_table[head], 0.5 · (qgrid[n] − pos[s]))

with q (B·m, H·W, d), k/v (B·m, Ns, d), pos (B·G, Ns, 2) as (y, x) in [-1, 1], rpe_table (m, Th, Tw), head
``h`` of group ``h // (m/G)``, the align-corners query grid i/(H−1)·2−1 (0 when H = 1), and ``grid_sample``'s
bilinear lookup with align_corners=True and zero padding.

Design (docs/kernels.md has the full account):

* Forward: one program per (b·m, block of BLOCK_M pixels). The head's agents stream through registers in tiles of
  BLOCK_S ≤ 256 (padded to a power of two and masked), so any agent count runs; per tile the program computes
  q kᵀ, the four bilinear taps of the bias from the pixel's coordinate and each agent's position, and updates an
  online softmax (exp2) and P V. It writes out and the base-2 logsumexp. No displacement, bias or logit tensor
  exists in memory.
* Backward: one program per (b·m, chunk of pixels, agent tile) recomputes the probabilities from the logsumexp,
  stores its tile's share of dQ (straight into dq with one tile, else into a per-tile slot summed afterwards),
  keeps its agents' dK, dV and position gradient in registers across its chunk and stores them into its own slot
  of per-chunk buffers (summed afterwards in a fixed order). The RPE-table gradient (the 4 taps × dS) goes into
  per-(image, head) partial tables as int64 fixed-point numbers (:func:`fixed_point_scale`): integer atomic adds
  are associative, so the result is bit-identical across runs; the partial tables are summed as integers.
* Gradients flow to q, k, v, rpe_table and pos, like the torch reference (grid_sample differentiates its grid).

Differences from official: none in the maths. The bias is evaluated in float32 whatever the table's dtype (the
official code samples the table in its own dtype, bf16 under autocast), and the RPE-table gradient is summed in
int64 fixed point (exact after rounding each contribution to ~1e-18 of a bound on its total; deterministic, where
the official grid_sample backward's float atomics are not).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (LOG2E, autotuned, batch_bucket, check_runnable, dot_precision, launch, pow2_at_least,
                      upcast_operands)
from ._tiles import check_tile_sizes

__all__ = ["pixel_agent_attention_triton", "pixel_agent_attention_macs", "fixed_point_scale"]

MAX_BLOCK_S = 256  # agents per tile: a head's agents stream through registers in tiles of at most this many
_LOG2E = tl.constexpr(LOG2E)  # the kernels' exp2 softmax scales the logits plus bias by log2(e) in-kernel


@triton.jit
def _rpe_bias(T, qy, qx, py, px, mask, stride_ty, stride_tx, TH: tl.constexpr, TW: tl.constexpr):
    """The RPE bias of every (pixel, agent) pair of the tile: the head's table T sampled bilinearly
    (grid_sample, align_corners=True, zero padding) at the displacement (q − pos) / 2, from the pixels' grid
    coordinates (qy, qx) and the agents' positions (py, px); ``mask`` is the tile's valid pairs.

    Returns (bias, ∂bias/∂fy, ∂bias/∂fx, fy, fx, y0, x0): the source index is (y0 + fy, x0 + fx), its four taps
    are (y0 | y0 + 1, x0 | x0 + 1). The forward uses the bias alone; the backward recomputes it and uses the rest."""
    iy = ((qy[:, None] - py[None, :]) * 0.5 + 1.0) / 2.0 * (TH - 1)
    ix = ((qx[:, None] - px[None, :]) * 0.5 + 1.0) / 2.0 * (TW - 1)
    y0f = tl.floor(iy)
    x0f = tl.floor(ix)
    fy = iy - y0f
    fx = ix - x0f
    y0 = y0f.to(tl.int32)
    x0 = x0f.to(tl.int32)
    in_y0 = (y0 >= 0) & (y0 < TH)
    in_y1 = (y0 + 1 >= 0) & (y0 + 1 < TH)
    in_x0 = (x0 >= 0) & (x0 < TW)
    in_x1 = (x0 + 1 >= 0) & (x0 + 1 < TW)
    t00 = tl.load(T + y0 * stride_ty + x0 * stride_tx, mask=mask & in_y0 & in_x0, other=0.).to(tl.float32)
    t01 = tl.load(T + y0 * stride_ty + (x0 + 1) * stride_tx, mask=mask & in_y0 & in_x1, other=0.).to(tl.float32)
    t10 = tl.load(T + (y0 + 1) * stride_ty + x0 * stride_tx, mask=mask & in_y1 & in_x0, other=0.).to(tl.float32)
    t11 = tl.load(T + (y0 + 1) * stride_ty + (x0 + 1) * stride_tx, mask=mask & in_y1 & in_x1,
                  other=0.).to(tl.float32)
    bias = (1.0 - fy) * ((1.0 - fx) * t00 + fx * t01) + fy * ((1.0 - fx) * t10 + fx * t11)
    gy = (1.0 - fx) * (t10 - t00) + fx * (t11 - t01)
    gx = (1.0 - fy) * (t01 - t00) + fy * (t11 - t10)
    return bias, gy, gx, fy, fx, y0, x0


@triton.jit(do_not_specialize=["BATCH_BUCKET"])
def _pixel_agent_fwd(Q, K, V, POS, TABLE, OUT, LSE2,  #
                     stride_qz, stride_qn, stride_qd,  #
                     stride_kz, stride_ks, stride_kd,  #
                     stride_vz, stride_vs, stride_vd,  #
                     stride_pz, stride_ps, stride_pc,  #
                     stride_th, stride_ty, stride_tx,  #
                     HW, H, W, den_h, den_w, sm_scale, BATCH_BUCKET,  #
                     NS: tl.constexpr, HEAD_DIM: tl.constexpr, NUM_HEADS: tl.constexpr, N_GROUPS: tl.constexpr,  #
                     TH: tl.constexpr, TW: tl.constexpr,  #
                     BLOCK_M: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,  #
                     DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    check_tile_sizes(HEAD_DIM, BLOCK_M, BLOCK_S, BLOCK_D)
    # 1-D grid (no 65535 cap on B·m): program -> (b·m + head, block of pixels); BATCH_BUCKET is only an autotune key
    n_mblocks = tl.cdiv(HW, BLOCK_M)
    pid_m = tl.program_id(0) % n_mblocks
    z = (tl.program_id(0) // n_mblocks).to(tl.int64)  # b·m + head
    h = z % NUM_HEADS
    pos_row = (z // NUM_HEADS) * N_GROUPS + h // (NUM_HEADS // N_GROUPS)  # b·G + group of this head
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_valid = offs_m < HW
    d_valid = offs_d < HEAD_DIM
    q = tl.load(Q + z * stride_qz + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                mask=m_valid[:, None] & d_valid[None, :], other=0.)
    if UPCAST:
        q = q.to(tl.float32)
    # the pixel's coordinate on the align-corners query grid
    qy = tl.where(H > 1, (offs_m // W).to(tl.float32) / den_h * 2.0 - 1.0, 0.0)
    qx = tl.where(W > 1, (offs_m % W).to(tl.float32) / den_w * 2.0 - 1.0, 0.0)
    T = TABLE + h * stride_th
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    # -- stream the agents in tiles of BLOCK_S (online softmax): any agent count fits in registers --
    for s0 in range(0, NS, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        s_valid = offs_s < NS
        kv_mask = s_valid[:, None] & d_valid[None, :]
        k = tl.load(K + z * stride_kz + offs_s[:, None] * stride_ks + offs_d[None, :] * stride_kd, mask=kv_mask,
                    other=0.)
        v = tl.load(V + z * stride_vz + offs_s[:, None] * stride_vs + offs_d[None, :] * stride_vd, mask=kv_mask,
                    other=0.)
        py = tl.load(POS + pos_row * stride_pz + offs_s * stride_ps, mask=s_valid, other=0.).to(tl.float32)
        px = tl.load(POS + pos_row * stride_pz + offs_s * stride_ps + stride_pc, mask=s_valid, other=0.).to(tl.float32)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        # -- compute qk --
        logits = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * sm_scale
        # -- RPE bias: bilinear taps of the head's table at each (pixel, agent) displacement --
        bias = _rpe_bias(T, qy, qx, py, px, m_valid[:, None] & s_valid[None, :], stride_ty, stride_tx, TH, TW)[0]
        # -- online softmax update (base 2); every tile holds at least one real agent, so m_new is finite --
        z2 = tl.where(s_valid[None, :], (logits + bias) * _LOG2E, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(z2, 1))
        alpha = tl.exp2(m_i - m_new)
        prob = tl.exp2(z2 - m_new[:, None])
        l_i = l_i * alpha + tl.sum(prob, 1)
        acc = acc * alpha[:, None] + tl.dot(prob.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    # epilogue: out is (B·m, HW, d) contiguous
    out = acc / l_i[:, None]
    tl.store(OUT + (z * HW + offs_m)[:, None] * HEAD_DIM + offs_d[None, :], out.to(OUT.dtype.element_ty),
             mask=m_valid[:, None] & d_valid[None, :])
    tl.store(LSE2 + z * HW + offs_m, m_i + tl.log2(l_i), mask=m_valid)


@triton.jit(do_not_specialize=["BATCH_BUCKET"])
def _pixel_agent_bwd(Q, K, V, POS, TABLE, OUT, DOUT, LSE2, FX_SCALE, DQ, DK, DV, DPOS, DTABLE,  #
                     stride_qz, stride_qn, stride_qd,  #
                     stride_kz, stride_ks, stride_kd,  #
                     stride_vz, stride_vs, stride_vd,  #
                     stride_pz, stride_ps, stride_pc,  #
                     stride_th, stride_ty, stride_tx,  #
                     stride_dz, stride_dn, stride_dd,  #
                     HW, H, W, den_h, den_w, sm_scale, N_CHUNKS, PIX_PER_CHUNK, Z, BATCH_BUCKET,  #
                     NS: tl.constexpr, HEAD_DIM: tl.constexpr, NUM_HEADS: tl.constexpr, N_GROUPS: tl.constexpr,  #
                     TH: tl.constexpr, TW: tl.constexpr,  #
                     BLOCK_M: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,  #
                     DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    check_tile_sizes(HEAD_DIM, BLOCK_M, BLOCK_S, BLOCK_D)
    N_STILES: tl.constexpr = (NS + BLOCK_S - 1) // BLOCK_S
    # 1-D grid: program -> (b·m + head, chunk of PIX_PER_CHUNK pixels, tile of BLOCK_S agents); the agent tiles of
    # one chunk are neighbours, so they read the same Q/dO rows while those are in L2
    stile = tl.program_id(0) % N_STILES
    chunk = (tl.program_id(0) // N_STILES) % N_CHUNKS
    z = (tl.program_id(0) // N_STILES // N_CHUNKS).to(tl.int64)
    h = z % NUM_HEADS
    pos_row = (z // NUM_HEADS) * N_GROUPS + h // (NUM_HEADS // N_GROUPS)
    offs_s = stile * BLOCK_S + tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_valid = offs_s < NS
    d_valid = offs_d < HEAD_DIM
    kv_mask = s_valid[:, None] & d_valid[None, :]
    # load this agent tile; its gradients accumulate in registers over the whole chunk
    k = tl.load(K + z * stride_kz + offs_s[:, None] * stride_ks + offs_d[None, :] * stride_kd, mask=kv_mask, other=0.)
    v = tl.load(V + z * stride_vz + offs_s[:, None] * stride_vs + offs_d[None, :] * stride_vd, mask=kv_mask, other=0.)
    py = tl.load(POS + pos_row * stride_pz + offs_s * stride_ps, mask=s_valid, other=0.).to(tl.float32)
    px = tl.load(POS + pos_row * stride_pz + offs_s * stride_ps + stride_pc, mask=s_valid, other=0.).to(tl.float32)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    dk = tl.zeros([BLOCK_S, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_S, BLOCK_D], tl.float32)
    dpy = tl.zeros([BLOCK_S], tl.float32)
    dpx = tl.zeros([BLOCK_S], tl.float32)
    T = TABLE + h * stride_th
    DT = DTABLE + z * TH * TW  # this image's and head's int64 fixed-point partial table, (B·m, TH, TW)
    fx_scale = tl.load(FX_SCALE)  # a power of two: contributions become integers, their sum is exact
    lo = chunk * PIX_PER_CHUNK
    hi = tl.minimum(lo + PIX_PER_CHUNK, HW)
    for start in range(lo, hi, BLOCK_M):
        offs_m = start + tl.arange(0, BLOCK_M)
        m_valid = offs_m < hi
        q_mask = m_valid[:, None] & d_valid[None, :]
        q = tl.load(Q + z * stride_qz + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                    mask=q_mask, other=0.)
        do = tl.load(DOUT + z * stride_dz + offs_m[:, None] * stride_dn + offs_d[None, :] * stride_dd,
                     mask=q_mask, other=0.)
        o = tl.load(OUT + (z * HW + offs_m)[:, None] * HEAD_DIM + offs_d[None, :], mask=q_mask, other=0.)
        if UPCAST:
            q = q.to(tl.float32)
            do = do.to(tl.float32)
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # rowsum(dO∘O) over all agents, not the tile's
        lse2 = tl.load(LSE2 + z * HW + offs_m, mask=m_valid, other=0.)
        # -- recompute logits and the bias taps exactly as the forward --
        logits = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * sm_scale
        qy = tl.where(H > 1, (offs_m // W).to(tl.float32) / den_h * 2.0 - 1.0, 0.0)
        qx = tl.where(W > 1, (offs_m % W).to(tl.float32) / den_w * 2.0 - 1.0, 0.0)
        ms = m_valid[:, None] & s_valid[None, :]
        # the bias, its gradient w.r.t. the fractional source index (fy, fx), and the taps' corner (y0, x0)
        bias, gy, gx, fy, fx, y0, x0 = _rpe_bias(T, qy, qx, py, px, ms, stride_ty, stride_tx, TH, TW)
        prob = tl.exp2((logits + bias) * _LOG2E - lse2[:, None])
        prob = tl.where(ms, prob, 0.0)
        # -- dV = Pᵀ dO ; dS = P ∘ (dO Vᵀ − delta) is the gradient of the logits and of the bias --
        dv += tl.dot(tl.trans(prob.to(do.dtype)), do, input_precision=DOT_PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = prob * (dp - delta[:, None])
        # this agent tile's share of dQ: its own slot of a (tiles, B·m, H·W, d) buffer when there are several tiles
        dq = tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION) * sm_scale
        tl.store(DQ + ((stile * Z + z) * HW + offs_m)[:, None] * HEAD_DIM + offs_d[None, :],
                 dq.to(DQ.dtype.element_ty), mask=q_mask)
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=DOT_PRECISION)
        # -- positions: summed over the block's pixels --
        dpy += tl.sum(ds * gy, 0)
        dpx += tl.sum(ds * gx, 0)
        # -- RPE table: each tap receives dS times its bilinear weight, as a fixed-point integer: integer addition
        #    is associative, so the sum is the same whatever order the atomics land in (bit-deterministic), and
        #    each (image, head) has its own partial table (64× less contention than one table at batch 64) --
        in_y0 = ms & (y0 >= 0) & (y0 < TH)
        in_y1 = ms & (y0 + 1 >= 0) & (y0 + 1 < TH)
        in_x0 = (x0 >= 0) & (x0 < TW)
        in_x1 = (x0 + 1 >= 0) & (x0 + 1 < TW)
        dsf = ds * fx_scale
        tl.atomic_add(DT + y0 * TW + x0, tl.floor(dsf * (1.0 - fy) * (1.0 - fx) + 0.5).to(tl.int64),
                      mask=in_y0 & in_x0, sem="relaxed")
        tl.atomic_add(DT + y0 * TW + x0 + 1, tl.floor(dsf * (1.0 - fy) * fx + 0.5).to(tl.int64),
                      mask=in_y0 & in_x1, sem="relaxed")
        tl.atomic_add(DT + (y0 + 1) * TW + x0, tl.floor(dsf * fy * (1.0 - fx) + 0.5).to(tl.int64),
                      mask=in_y1 & in_x0, sem="relaxed")
        tl.atomic_add(DT + (y0 + 1) * TW + x0 + 1, tl.floor(dsf * fy * fx + 0.5).to(tl.int64),
                      mask=in_y1 & in_x1, sem="relaxed")
    # epilogue: this program's agent gradients go to its own (chunk, z) slot, plain stores; the wrapper sums the
    # chunks (and the heads of a group, for pos) in a fixed order.
    # iy = ((qy − py)/2 + 1)/2 · (TH − 1), so ∂iy/∂py = −(TH − 1)/4 (likewise for x)
    slot = chunk * Z + z
    kv_ptrs = (slot * NS + offs_s)[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DK + kv_ptrs, dk * sm_scale, mask=kv_mask)
    tl.store(DV + kv_ptrs, dv, mask=kv_mask)
    tl.store(DPOS + (slot * NS + offs_s) * 2, dpy * (-0.25 * (TH - 1)), mask=s_valid)
    tl.store(DPOS + (slot * NS + offs_s) * 2 + 1, dpx * (-0.25 * (TW - 1)), mask=s_valid)


# ---------------------------------------------------------------------------------------------------------------
# Python wrappers: shape checks, tile choice, launches
# ---------------------------------------------------------------------------------------------------------------
_OP = "pixel_agent_attention_triton"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_inputs(q, k, v, pos, rpe_table, n_groups: int, H: int, W: int) -> None:
    if q.dim() != 3 or k.dim() != 3 or k.shape != v.shape:
        raise ValueError(f"{_OP}: q must be (B·m, H·W, d) and k, v (B·m, Ns, d), got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    Z, N, d = q.shape
    if k.shape[0] != Z or k.shape[2] != d:
        raise ValueError(f"{_OP}: k and v must be (B·m={Z}, Ns, d={d}), got {tuple(k.shape)}")
    if N != H * W:
        raise ValueError(f"{_OP}: q has {N} pixels but H·W = {H}·{W} = {H * W}")
    Ns = k.shape[1]
    if Ns < 1:
        raise ValueError(f"{_OP}: k and v hold no agent (Ns = 0); at least one is needed")
    if rpe_table.dim() != 3:
        raise ValueError(f"{_OP}: rpe_table must be (m, Th, Tw), got {tuple(rpe_table.shape)}")
    m = rpe_table.shape[0]
    if n_groups < 1 or m % n_groups != 0 or Z % m != 0:
        raise ValueError(f"{_OP}: n_groups={n_groups} must divide the heads m={m} (rpe_table.shape[0]), and m "
                         f"must divide q.shape[0]={Z}")
    if pos.shape != (Z // m * n_groups, Ns, 2):
        raise ValueError(f"{_OP}: pos must be (B·G={Z // m * n_groups}, Ns={Ns}, 2), got {tuple(pos.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in _DTYPES:
        raise ValueError(f"{_OP}: q, k, v must share one dtype of {_DTYPES}, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (pos.dtype.is_floating_point and rpe_table.dtype.is_floating_point):
        raise ValueError(f"{_OP}: pos and rpe_table must be floating point, got {pos.dtype}, {rpe_table.dtype}")


# Heuristic (BLOCK_M, num_warps) by BLOCK_S, the interpreter's and ATTN_KERNELS_AUTOTUNE=0's single configuration:
# the backward keeps a dozen (BLOCK_M, BLOCK_S) float32 temporaries and the (BLOCK_S, d) dK/dV accumulators in
# registers. Chosen from ptxas' report for sm_90 (triton 3.8, bf16, d = 32, scripts/kernels_ptxas.py). On a GPU
# the autotuner picks among _FWD_CONFIGS / _BWD_CONFIGS instead: at most three per BLOCK_S, every one of them
# compiled for sm_90 by scripts/kernels_ptxas.py (docs/kernels.md §2 lists which).
_FWD_TILES = {16: (64, 4), 32: (64, 8), 64: (64, 8), 128: (32, 8), 256: (16, 8)}
_BWD_TILES = {16: (32, 4), 32: (16, 4), 64: (16, 8), 128: (16, 8), 256: (16, 8)}
_FWD_CONFIGS = {16: [(64, 4), (32, 4)], 32: [(64, 8), (32, 4)], 64: [(64, 8), (32, 4)], 128: [(32, 8), (16, 4)],
                256: [(16, 8)]}
_BWD_CONFIGS = {16: [(32, 4), (16, 4)], 32: [(16, 4), (32, 4)], 64: [(16, 8), (16, 4)], 128: [(16, 8)],
                256: [(16, 8)]}
_KEY = ["HW", "NS", "HEAD_DIM", "BATCH_BUCKET"]  # + the tensors' dtypes (Triton appends them)


def _block_s(Ns: int, block_s=None) -> int:
    """Agents per tile: all of them (padded to a power of two ≥ 16) up to MAX_BLOCK_S, else tiles of it."""
    return block_s or pow2_at_least(Ns, 16, MAX_BLOCK_S)


def _prune(table: dict):
    """Keep the configs listed for this BLOCK_S (≤ 3) whose BLOCK_M is not larger than the padded pixel count (the
    smallest listed one if none is)."""
    def prune(cfgs, a):
        rows, wanted = pow2_at_least(a["HW"], 16), table[a["BLOCK_S"]]
        listed = [c for c in cfgs if (c.kwargs["BLOCK_M"], c.num_warps) in wanted]
        return [c for c in listed if c.kwargs["BLOCK_M"] <= rows] or [min(listed, key=lambda c: c.kwargs["BLOCK_M"])]
    return prune


def _configs(table: dict):
    pairs = sorted({pair for pairs in table.values() for pair in pairs})
    return [triton.Config({"BLOCK_M": bm}, num_warps=w, num_stages=2) for bm, w in pairs]


_fwd_tuned = autotuned(_pixel_agent_fwd, _configs(_FWD_CONFIGS), _KEY, _prune(_FWD_CONFIGS))
# the partial RPE tables accumulate (integer atomics): zeroed before every timed config and before the real launch
_bwd_tuned = autotuned(_pixel_agent_bwd, _configs(_BWD_CONFIGS), _KEY, _prune(_BWD_CONFIGS),
                       reset_to_zero=["DTABLE"])


def _consts(q, k, rpe_table, n_groups, block_s=None) -> dict:
    Ns, d = k.shape[1], k.shape[2]
    m, Th, Tw = rpe_table.shape
    return dict(NS=Ns, HEAD_DIM=d, NUM_HEADS=m, N_GROUPS=n_groups, TH=Th, TW=Tw, BLOCK_S=_block_s(Ns, block_s),
                BLOCK_D=pow2_at_least(d, 16), DOT_PRECISION=dot_precision(q.dtype),
                UPCAST=upcast_operands(_pixel_agent_fwd))


def _heuristic(consts: dict, backward: bool, block_m=None) -> dict:
    tile_m, warps = (_BWD_TILES if backward else _FWD_TILES)[consts["BLOCK_S"]]
    return dict(BLOCK_M=block_m or tile_m, num_warps=warps)


def _grid_args(H: int, W: int) -> tuple:
    """(HW, H, W, den_h, den_w): the query grid is i / den · 2 − 1 (a 1-wide axis sits at 0)."""
    return H * W, H, W, float(max(H - 1, 1)), float(max(W - 1, 1))


def _forward(q, k, v, pos, rpe_table, n_groups: int, H: int, W: int, scale: float, block_m=None, block_s=None):
    """Launch the forward -> (out (B·m, H·W, d), lse2 (B·m, H·W) float32). ``block_m``/``block_s`` force tiles
    (tests); otherwise the heuristic (interpreter) or the autotuner (GPU) chooses BLOCK_M."""
    check_runnable(_OP, _pixel_agent_fwd, q, k, v, pos, rpe_table)
    Z, N, d = q.shape
    out = torch.empty((Z, N, d), dtype=q.dtype, device=q.device)
    lse2 = torch.empty((Z, N), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse2
    c = _consts(q, k, rpe_table, n_groups, block_s)
    launch(_pixel_agent_fwd, _fwd_tuned, lambda meta: (triton.cdiv(N, meta["BLOCK_M"]) * Z,),
           (q, k, v, pos, rpe_table, out, lse2, *q.stride(), *k.stride(), *v.stride(), *pos.stride(),
            *rpe_table.stride(), *_grid_args(H, W), scale, batch_bucket(Z // rpe_table.shape[0])), c,
           _heuristic(c, False, block_m), bool(block_m or block_s))
    return out, lse2


def _chunks(N: int, Z: int, agent_tiles: int, device: torch.device) -> int:
    """Pixel chunks per (head, agent tile) in the backward: enough for ~4 programs per SM; one on the interpreter
    (fewest programs)."""
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(triton.cdiv(N, 128), triton.cdiv(4 * sms, Z * agent_tiles)))


def fixed_point_scale(dout: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The power of two that turns RPE-table gradient contributions into int64 without overflow: 2^60 / bound.

    ``bound`` ≥ Σ over every (b·m, pixel, agent) of |dS| ≥ |any partial or total table entry|, because
    Σ_s |dS_ns| = Σ_s P_ns |dO_n·v_s − Σ_t P_nt dO_n·v_t| ≤ 2 ‖dO_n‖ max_s ‖v_s‖ and the four bilinear weights sum
    to ≤ 1; a factor 4 covers the norms' rounding. Each contribution is then rounded to bound·2^-61, about 1e-18 of
    the bound (float32 atomics round each partial sum to 6e-8 of itself). Computed on the device: no sync."""
    rows = torch.linalg.vector_norm(dout, dim=-1).float().sum()  # (B·m, H·W) norms: 1/d of dout, not a copy
    bound = 4.0 * rows * torch.linalg.vector_norm(v, dim=-1).float().amax()
    exponent = torch.floor(torch.log2(2.0**60 / bound.clamp_min(1e-30))).clamp(-100.0, 100.0)
    return torch.exp2(exponent).reshape(1).to(torch.float32)


def _backward(dout, q, k, v, pos, rpe_table, out, lse2, n_groups, H, W, scale, block_m=None, chunks=None,
              block_s=None):
    """Launch the backward -> (dq, dk, dv, dpos, drpe_table), every gradient bit-identical from run to run.

    One program per (b·m, chunk of pixels, tile of BLOCK_S agents). dK, dV and dpos: each program stores its
    float32 partial sums into its own slot of a (chunks, ...) buffer, summed here in a fixed order (chunks = 1
    when the programs alone fill the GPU). dQ: with one agent tile, written straight into dq; with several, each
    tile writes its share into its own slot of a float32 (tiles, B·m, H·W, d) buffer, summed here in tile order.
    The RPE table: int64 fixed-point partial tables per (image, head), (B·m, Th, Tw), filled by integer atomics
    (exact, so order-free), summed over the batch as integers and scaled back once."""
    check_runnable(_OP, _pixel_agent_bwd, dout, q, k, v, pos, rpe_table)
    Z, N, d = q.shape
    m, Th, Tw = rpe_table.shape
    B, Ns = Z // m, k.shape[1]
    c = _consts(q, k, rpe_table, n_groups, block_s)
    agent_tiles = triton.cdiv(Ns, c["BLOCK_S"])
    n_chunks = chunks or _chunks(N, Z, agent_tiles, q.device)
    pix_per_chunk = triton.cdiv(N, n_chunks)
    n_chunks = triton.cdiv(N, pix_per_chunk) if N else 1  # no empty chunk
    dq = torch.empty((Z, N, d), dtype=q.dtype, device=q.device)
    dq_tiles = dq if agent_tiles == 1 else torch.empty((agent_tiles, Z, N, d), dtype=torch.float32, device=q.device)
    dk = torch.zeros((n_chunks, Z, Ns, d), dtype=torch.float32, device=k.device)
    dv = torch.zeros_like(dk)
    dpos = torch.zeros((n_chunks, Z, Ns, 2), dtype=torch.float32, device=pos.device)
    dtable = torch.zeros((Z, Th, Tw), dtype=torch.int64, device=rpe_table.device)
    fx_scale = fixed_point_scale(dout, v)
    if dq.numel() > 0:
        launch(_pixel_agent_bwd, _bwd_tuned, lambda meta: (agent_tiles * n_chunks * Z,),
               (q, k, v, pos, rpe_table, out.contiguous(), dout, lse2, fx_scale, dq_tiles, dk, dv, dpos, dtable,
                *q.stride(), *k.stride(), *v.stride(), *pos.stride(), *rpe_table.stride(), *dout.stride(),
                *_grid_args(H, W), scale, n_chunks, pix_per_chunk, Z, batch_bucket(B)), c,
               _heuristic(c, True, block_m), bool(block_m or block_s))
        if agent_tiles > 1:
            dq = dq_tiles.sum(0).to(q.dtype)
    dpos = dpos.sum(0).view(B, n_groups, m // n_groups, Ns, 2).sum(2).view(B * n_groups, Ns, 2)
    dtable = (dtable.view(B, m, Th, Tw).sum(0).to(torch.float64) / fx_scale.double()).to(rpe_table.dtype)
    return dq, dk.sum(0).to(k.dtype), dv.sum(0).to(v.dtype), dpos.to(pos.dtype), dtable


# ---------------------------------------------------------------------------------------------------------------
# torch custom ops: attentions::pixel_agent_attention (-> out, lse2) and attentions::pixel_agent_attention_backward
# ---------------------------------------------------------------------------------------------------------------
@torch.library.custom_op("attentions::pixel_agent_attention", mutates_args=())
def _pixel_agent_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor, rpe_table: torch.Tensor,
                    n_groups: int, H: int, W: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    _check_inputs(q, k, v, pos, rpe_table, n_groups, H, W)
    return _forward(q, k, v, pos, rpe_table, n_groups, H, W, scale)


@_pixel_agent_op.register_fake
def _(q, k, v, pos, rpe_table, n_groups, H, W, scale):
    _check_inputs(q, k, v, pos, rpe_table, n_groups, H, W)
    return q.new_empty(q.shape), q.new_empty(q.shape[:2], dtype=torch.float32)


@torch.library.custom_op("attentions::pixel_agent_attention_backward", mutates_args=())
def _pixel_agent_bwd_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                        rpe_table: torch.Tensor, out: torch.Tensor, lse2: torch.Tensor, n_groups: int, H: int,
                        W: int, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                       torch.Tensor]:
    return _backward(dout, q, k, v, pos, rpe_table, out, lse2, n_groups, H, W, scale)


@_pixel_agent_bwd_op.register_fake
def _(dout, q, k, v, pos, rpe_table, out, lse2, n_groups, H, W, scale):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), pos.new_empty(pos.shape),
            rpe_table.new_empty(rpe_table.shape))


def _setup_context(ctx, inputs, output):
    q, k, v, pos, rpe_table, n_groups, H, W, scale = inputs
    out, lse2 = output
    ctx.save_for_backward(q, k, v, pos, rpe_table, out, lse2)
    ctx.args = (n_groups, H, W, scale)
    ctx.mark_non_differentiable(lse2)


def _autograd_backward(ctx, dout, _dlse2):
    q, k, v, pos, rpe_table, out, lse2 = ctx.saved_tensors
    grads = torch.ops.attentions.pixel_agent_attention_backward(dout, q, k, v, pos, rpe_table, out, lse2, *ctx.args)
    return (*grads, None, None, None, None)


torch.library.register_autograd("attentions::pixel_agent_attention", _autograd_backward,
                                setup_context=_setup_context)


def pixel_agent_attention_macs(q_shape, k_shape) -> int:
    """Multiply-adds of the forward's two matmuls (QKᵀ and PV): 2 · B·m · H·W · Ns · d. The bias is not counted
    (fvcore convention: elementwise work and grid_sample's interpolation are not MACs of a matmul)."""
    Z, N, d = q_shape
    return 2 * Z * N * k_shape[1] * d


def _register_flop_formulas() -> None:
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.attentions.pixel_agent_attention)
    def _fwd_flops(q_shape, k_shape, *args, **kwargs) -> int:
        return 2 * pixel_agent_attention_macs(q_shape, k_shape)

    @register_flop_formula(torch.ops.attentions.pixel_agent_attention_backward)
    def _bwd_flops(dout_shape, q_shape, k_shape, *args, **kwargs) -> int:
        # five matmuls (QKᵀ recomputed, dO Vᵀ, PᵀdO, dS K, dSᵀQ): 2.5× the forward, torch's SDPA convention
        return 5 * pixel_agent_attention_macs(q_shape, k_shape)


_register_flop_formulas()


def pixel_agent_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                                 rpe_table: torch.Tensor, n_groups: int, H: int, W: int,
                                 scale: float) -> torch.Tensor:
    """Fused pixel-to-agent attention; same contract as :func:`attentions.deformable.pixel_to_agent_attention_torch`.

    Args:
        q: (B·m, H·W, d) pixel queries, row-major pixels.
        k, v: (B·m, Ns, d) agent keys and values, any Ns ≥ 1 (streamed in tiles of ≤ 256).
        pos: (B·G, Ns, 2) agent positions, (y, x), normalised to [-1, 1].
        rpe_table: (m, Th, Tw) continuous relative-position table.
        n_groups: offset groups G; head h uses the positions of group h // (m / G).
        H, W: the query grid.
        scale: logit scale (C^-0.5 in DBRA).

    Returns:
        (B·m, H·W, d), differentiable w.r.t. q, k, v, pos and rpe_table.
    """
    _check_inputs(q, k, v, pos, rpe_table, n_groups, H, W)
    return torch.ops.attentions.pixel_agent_attention(q, k, v, pos, rpe_table, int(n_groups), int(H), int(W),
                                                      float(scale))[0]
