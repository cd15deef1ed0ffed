"""Fused routed (bi-level routing) attention: each query region attends to its top-k key regions, read by index.

Paper: "BiFormer: Vision Transformer with Bi-Level Routing Attention", arXiv 2303.08810 (official code
rayleizhu/BiFormer ``ops/bra_legacy.py``, commit 1697bbb), reused by "DeBiFormer: Vision Transformer with
Deformable Agent Bi-level Routing Attention", arXiv 2410.08582 (maclong01/DeBiFormer, commit 1ceb090). The online
softmax and the recompute-from-logsumexp backward follow FlashAttention-2 (arXiv 2307.08691) and Triton's
fused-attention tutorial.

Same signature and semantics as :func:`attentions.routing.routed_attention`: q (B, P, nq, C), k/v (B, P, nk, C),
idx (B, P, topk); heads split head-major from C (channel = head·d + j); out (B, P, nq, C).

Design (docs/kernels.md has the full account):

* One program per (batch, query region, head, block of BLOCK_M queries). Q stays in registers; the program walks
  the region's *flattened routed key axis* j ∈ [0, topk·nk) in tiles of BLOCK_N keys: key j is row j % nk of
  region idx[b, p, j // nk], loaded straight from the un-gathered k and v. Small regions (nk = 4 in BRA stage 3)
  therefore fill a tile with several regions instead of padding one region to 16 rows.
* Forward: online softmax in base 2 (scale·log2 e folded into one multiplier), writes out and the base-2
  logsumexp ``lse2`` (B, P, heads, nq) in float32.
* Backward, one kernel on the same grid: recompute the probabilities from ``lse2``, dQ in registers and stored
  once; dK and dV accumulated with float32 atomics into buffers the size of k and v. Nothing in the forward or the
  backward grows with P·topk beyond the inputs: the official expanded gather's (B, P, P, nk, C) gradient buffer
  never exists. Atomics make dK/dV's summation order non-deterministic (last-bit differences between runs).

Differences from official: none in the maths (same softmax, same scale). Indices outside [0, P) are masked out
instead of read (the official gather would raise); :func:`routed_attention_triton` checks them on CPU.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import LOG2E, check_runnable, dot_precision, pow2_at_least, upcast_operands

__all__ = ["routed_attention_triton", "routed_attention_macs"]


@triton.jit
def _routed_attn_fwd(Q, K, V, IDX, OUT, LSE2,  #
                     stride_qb, stride_qp, stride_qn, stride_qc,  #
                     stride_kb, stride_kp, stride_kn, stride_kc,  #
                     stride_vb, stride_vp, stride_vn, stride_vc,  #
                     stride_ib, stride_ip, stride_it,  #
                     stride_ob, stride_op, stride_on, stride_oc,  #
                     P, qk_scale,  #
                     NQ: tl.constexpr, NK: tl.constexpr, TOPK: tl.constexpr,  #
                     NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,  #
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,  #
                     DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    tl.static_assert(BLOCK_D >= HEAD_DIM)
    tl.static_assert(BLOCK_M >= 16)  # tl.dot needs every tile side ≥ 16
    tl.static_assert(BLOCK_N >= 16)
    tl.static_assert(BLOCK_D >= 16)
    # -- which (b, p, head, query block) this program owns; the heads of one region are neighbours in the grid,
    #    so they read the same routed K/V rows while those are in L2 --
    N_QBLOCKS: tl.constexpr = (NQ + BLOCK_M - 1) // BLOCK_M
    pid = tl.program_id(0)
    qb = pid % N_QBLOCKS
    bph = (pid // N_QBLOCKS).to(tl.int64)
    h = bph % NUM_HEADS
    p = (bph // NUM_HEADS) % P
    b = bph // NUM_HEADS // P
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    ch = h * HEAD_DIM + offs_d  # head-major channel split
    d_valid = offs_d < HEAD_DIM
    q_mask = (offs_m < NQ)[:, None] & d_valid[None, :]
    # load q: it stays in registers throughout
    q = tl.load(Q + b * stride_qb + p * stride_qp + offs_m[:, None] * stride_qn + ch[None, :] * stride_qc,
                mask=q_mask, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    IDX_ROW = IDX + b * stride_ib + p * stride_ip
    # -- loop over the flattened routed keys j: row j % NK of region idx[b, p, j // NK] --
    for j0 in range(0, TOPK * NK, BLOCK_N):
        offs_j = j0 + offs_n
        row = offs_j % NK
        valid = offs_j < TOPK * NK
        region = tl.load(IDX_ROW + (offs_j // NK) * stride_it, mask=valid, other=0).to(tl.int64)
        valid = valid & (region >= 0) & (region < P)  # memory guard: a bad index reads nothing
        kv_mask = valid[:, None] & d_valid[None, :]
        k = tl.load(K + b * stride_kb + region[:, None] * stride_kp + row[:, None] * stride_kn
                    + ch[None, :] * stride_kc, mask=kv_mask, other=0.0)
        v = tl.load(V + b * stride_vb + region[:, None] * stride_vp + row[:, None] * stride_vn
                    + ch[None, :] * stride_vc, mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        # -- compute qk (base-2 logits) --
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        s = tl.where(valid[None, :], s, float("-inf"))
        # -- online softmax update --
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        prob = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(prob, 1)
        acc = acc * alpha[:, None] + tl.dot(prob.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    # epilogue
    out = acc / l_i[:, None]
    tl.store(OUT + b * stride_ob + p * stride_op + offs_m[:, None] * stride_on + ch[None, :] * stride_oc,
             out.to(OUT.dtype.element_ty), mask=q_mask)
    tl.store(LSE2 + bph * NQ + offs_m, m_i + tl.log2(l_i), mask=offs_m < NQ)


@triton.jit
def _routed_attn_bwd(Q, K, V, IDX, OUT, DOUT, LSE2, DQ, DK, DV,  #
                     stride_qb, stride_qp, stride_qn, stride_qc,  #
                     stride_kb, stride_kp, stride_kn, stride_kc,  #
                     stride_vb, stride_vp, stride_vn, stride_vc,  #
                     stride_ib, stride_ip, stride_it,  #
                     stride_ob, stride_op, stride_on, stride_oc,  #
                     stride_db, stride_dp, stride_dn, stride_dc,  #
                     P, sm_scale, qk_scale,  #
                     NQ: tl.constexpr, NK: tl.constexpr, TOPK: tl.constexpr,  #
                     NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,  #
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,  #
                     DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    tl.static_assert(BLOCK_D >= HEAD_DIM)
    tl.static_assert(BLOCK_M >= 16)
    tl.static_assert(BLOCK_N >= 16)
    tl.static_assert(BLOCK_D >= 16)
    C: tl.constexpr = NUM_HEADS * HEAD_DIM
    N_QBLOCKS: tl.constexpr = (NQ + BLOCK_M - 1) // BLOCK_M
    pid = tl.program_id(0)
    qb = pid % N_QBLOCKS
    bph = (pid // N_QBLOCKS).to(tl.int64)
    h = bph % NUM_HEADS
    p = (bph // NUM_HEADS) % P
    b = bph // NUM_HEADS // P
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    ch = h * HEAD_DIM + offs_d
    d_valid = offs_d < HEAD_DIM
    m_valid = offs_m < NQ
    q_mask = m_valid[:, None] & d_valid[None, :]
    # load q, dO and O of this query block: they stay in registers throughout
    q = tl.load(Q + b * stride_qb + p * stride_qp + offs_m[:, None] * stride_qn + ch[None, :] * stride_qc,
                mask=q_mask, other=0.0)
    do = tl.load(DOUT + b * stride_db + p * stride_dp + offs_m[:, None] * stride_dn + ch[None, :] * stride_dc,
                 mask=q_mask, other=0.0)
    o = tl.load(OUT + b * stride_ob + p * stride_op + offs_m[:, None] * stride_on + ch[None, :] * stride_oc,
                mask=q_mask, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # rowsum(dO ∘ O) = Σ_j P_ij dP_ij
    lse2 = tl.load(LSE2 + bph * NQ + offs_m, mask=m_valid, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    IDX_ROW = IDX + b * stride_ib + p * stride_ip
    for j0 in range(0, TOPK * NK, BLOCK_N):
        # -- load the K/V tile exactly as the forward does --
        offs_j = j0 + offs_n
        row = offs_j % NK
        valid = offs_j < TOPK * NK
        region = tl.load(IDX_ROW + (offs_j // NK) * stride_it, mask=valid, other=0).to(tl.int64)
        valid = valid & (region >= 0) & (region < P)
        kv_mask = valid[:, None] & d_valid[None, :]
        k = tl.load(K + b * stride_kb + region[:, None] * stride_kp + row[:, None] * stride_kn
                    + ch[None, :] * stride_kc, mask=kv_mask, other=0.0)
        v = tl.load(V + b * stride_vb + region[:, None] * stride_vp + row[:, None] * stride_vn
                    + ch[None, :] * stride_vc, mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        # -- recompute the probabilities from the saved logsumexp --
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        prob = tl.exp2(s - lse2[:, None])
        prob = tl.where(m_valid[:, None] & valid[None, :], prob, 0.0)
        # -- dV = Pᵀ dO ; dS = P ∘ (dO Vᵀ − delta) is the gradient of the scaled logits --
        dv_blk = tl.dot(tl.trans(prob.to(do.dtype)), do, input_precision=DOT_PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = prob * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)
        dk_blk = tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=DOT_PRECISION)
        # -- scatter into the K/V-sized float32 accumulators: several query regions route to one key region --
        acc_ptrs = ((b * P + region) * NK + row)[:, None] * C + ch[None, :]
        tl.atomic_add(DK + acc_ptrs, dk_blk * sm_scale, mask=kv_mask, sem="relaxed")
        tl.atomic_add(DV + acc_ptrs, dv_blk, mask=kv_mask, sem="relaxed")
    # epilogue: dQ belongs to this program alone
    dq_ptrs = DQ + ((b * P + p) * NQ + offs_m)[:, None] * C + ch[None, :]
    tl.store(dq_ptrs, (dq * sm_scale).to(DQ.dtype.element_ty), mask=q_mask)


# ---------------------------------------------------------------------------------------------------------------
# Python wrappers: shape checks, tile choice, launches
# ---------------------------------------------------------------------------------------------------------------
_OP = "routed_attention_triton"
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_inputs(q, k, v, idx, num_heads: int) -> None:
    """Shape/dtype checks; values of idx are not read here (that would synchronise a GPU)."""
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"{_OP}: q and k must be (B, P, n, C), got q {tuple(q.shape)}, k {tuple(k.shape)}")
    B, P, _, C = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[1] != P or k.shape[3] != C:
        raise ValueError(f"{_OP}: k and v must be (B={B}, P={P}, nk, C={C}), got k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if idx.dim() != 3 or idx.shape[0] != B or idx.shape[1] != P or idx.shape[2] < 1:
        raise ValueError(f"{_OP}: idx must be (B={B}, P={P}, topk≥1), got {tuple(idx.shape)}")
    if idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{_OP}: idx must be int64 or int32, got {idx.dtype}")
    if num_heads < 1 or C % num_heads != 0:
        raise ValueError(f"{_OP}: num_heads={num_heads} must divide the channels C={C}")
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in _DTYPES:
        raise ValueError(f"{_OP}: q, k, v must share one dtype of {_DTYPES}, got {q.dtype}, {k.dtype}, {v.dtype}")


def _tiles(nq: int, nk: int, topk: int, head_dim: int, block_m=None, block_n=None) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_D). 64×64 tiles cap the registers a program holds (q, acc, one K and V tile)."""
    block_m = block_m or pow2_at_least(nq, 16, 64)
    block_n = block_n or pow2_at_least(topk * nk, 16, 64)
    return block_m, block_n, pow2_at_least(head_dim, 16)


def _meta(q, k, idx, num_heads, block_m=None, block_n=None) -> dict:
    B, P, nq, C = q.shape
    nk, topk, d = k.shape[2], idx.shape[2], C // num_heads
    bm, bn, bd = _tiles(nq, nk, topk, d, block_m, block_n)
    return dict(NQ=nq, NK=nk, TOPK=topk, NUM_HEADS=num_heads, HEAD_DIM=d, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd,
                DOT_PRECISION=dot_precision(q.dtype), UPCAST=upcast_operands(_routed_attn_fwd), num_warps=4)


def _grid(q, num_heads, meta) -> tuple[int]:
    B, P, nq, _ = q.shape
    return (B * P * num_heads * triton.cdiv(nq, meta["BLOCK_M"]),)


def _forward(q, k, v, idx, num_heads: int, scale: float, block_m=None, block_n=None):
    """Launch the forward kernel -> (out (B, P, nq, C), lse2 (B, P, heads, nq) float32)."""
    check_runnable(_OP, _routed_attn_fwd, q, k, v, idx)
    B, P, nq, C = q.shape
    out = torch.empty((B, P, nq, C), dtype=q.dtype, device=q.device)
    lse2 = torch.empty((B, P, num_heads, nq), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse2
    meta = _meta(q, k, idx, num_heads, block_m, block_n)
    _routed_attn_fwd[_grid(q, num_heads, meta)](
        q, k, v, idx, out, lse2, *q.stride(), *k.stride(), *v.stride(), *idx.stride(), *out.stride(),
        P, scale * LOG2E, **meta)
    return out, lse2


def _backward(dout, q, k, v, idx, out, lse2, num_heads: int, scale: float, block_m=None, block_n=None):
    """Launch the backward kernel -> (dq, dk, dv). Allocates dq (q's size) and float32 dK/dV (k's, v's size)."""
    check_runnable(_OP, _routed_attn_bwd, dout, q, k, v, idx)
    B, P, nq, C = q.shape
    dq = torch.empty((B, P, nq, C), dtype=q.dtype, device=q.device)
    dk = torch.zeros(k.shape, dtype=torch.float32, device=k.device)
    dv = torch.zeros(v.shape, dtype=torch.float32, device=v.device)
    if dq.numel() > 0:
        meta = _meta(q, k, idx, num_heads, block_m, block_n)
        _routed_attn_bwd[_grid(q, num_heads, meta)](
            q, k, v, idx, out, dout, lse2, dq, dk, dv,
            *q.stride(), *k.stride(), *v.stride(), *idx.stride(), *out.stride(), *dout.stride(),
            P, scale, scale * LOG2E, **meta)
    return dq, dk.to(k.dtype), dv.to(v.dtype)


# ---------------------------------------------------------------------------------------------------------------
# torch custom ops: attentions::routed_attention (-> out, lse2) and attentions::routed_attention_backward
# ---------------------------------------------------------------------------------------------------------------
@torch.library.custom_op("attentions::routed_attention", mutates_args=())
def _routed_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor, num_heads: int,
                         scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    _check_inputs(q, k, v, idx, num_heads)
    return _forward(q, k, v, idx, num_heads, scale)


@_routed_attention_op.register_fake
def _(q, k, v, idx, num_heads, scale):
    _check_inputs(q, k, v, idx, num_heads)
    B, P, nq, C = q.shape
    return q.new_empty((B, P, nq, C)), q.new_empty((B, P, num_heads, nq), dtype=torch.float32)


@torch.library.custom_op("attentions::routed_attention_backward", mutates_args=())
def _routed_attention_bwd_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             idx: torch.Tensor, out: torch.Tensor, lse2: torch.Tensor, num_heads: int,
                             scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(dout, q, k, v, idx, out, lse2, num_heads, scale)


@_routed_attention_bwd_op.register_fake
def _(dout, q, k, v, idx, out, lse2, num_heads, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, idx, num_heads, scale = inputs
    out, lse2 = output
    ctx.save_for_backward(q, k, v, idx, out, lse2)
    ctx.num_heads, ctx.scale = num_heads, scale
    ctx.mark_non_differentiable(lse2)


def _autograd_backward(ctx, dout, _dlse2):
    q, k, v, idx, out, lse2 = ctx.saved_tensors
    dq, dk, dv = torch.ops.attentions.routed_attention_backward(dout, q, k, v, idx, out, lse2, ctx.num_heads,
                                                                ctx.scale)
    return dq, dk, dv, None, None, None


torch.library.register_autograd("attentions::routed_attention", _autograd_backward, setup_context=_setup_context)


def routed_attention_macs(q_shape, k_shape, idx_shape) -> int:
    """Multiply-adds of the forward's two matmuls (QKᵀ and PV): 2 · B·P·nq · topk·nk · C."""
    B, P, nq, C = q_shape
    return 2 * B * P * nq * idx_shape[2] * k_shape[2] * C


def _register_flop_formulas() -> None:
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.attentions.routed_attention)
    def _fwd_flops(q_shape, k_shape, v_shape, idx_shape, *args, **kwargs) -> int:
        return 2 * routed_attention_macs(q_shape, k_shape, idx_shape)  # FLOPs = 2 · MACs

    # backward: dV = PᵀdO, dP = dO Vᵀ, dQ = dS K, dK = dSᵀ Q — twice the forward, as torch counts SDPA's
    # backward (the recomputed QKᵀ is not counted)
    @register_flop_formula(torch.ops.attentions.routed_attention_backward)
    def _bwd_flops(dout_shape, q_shape, k_shape, v_shape, idx_shape, *args, **kwargs) -> int:
        return 4 * routed_attention_macs(q_shape, k_shape, idx_shape)


_register_flop_formulas()


def routed_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor,
                            num_heads: int, scale: float) -> torch.Tensor:
    """Fused routed attention; same contract as :func:`attentions.routing.routed_attention`.

    Args:
        q: (B, P, nq, C) queries grouped by region.
        k, v: (B, P, nk, C) keys and values grouped by region.
        idx: (B, P, topk) int64/int32 routed region indices in [0, P).
        num_heads: heads, channels split head-major (C = num_heads · d).
        scale: logit scale (C^-0.5 in BRA/DBRA).

    Returns:
        (B, P, nq, C), differentiable w.r.t. q, k and v through ``attentions::routed_attention``.
    """
    _check_inputs(q, k, v, idx, num_heads)
    P = q.shape[1]
    if idx.device.type == "cpu" and idx.numel() and not torch.compiler.is_compiling():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= P:
            raise ValueError(f"{_OP}: idx values must lie in [0, P={P}), got min {lo}, max {hi}")
    return torch.ops.attentions.routed_attention(q, k, v, idx, num_heads, float(scale))[0]
