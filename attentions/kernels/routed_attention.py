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
* Backward, two passes and no atomics: a query-major pass (the forward's grid) recomputes the probabilities from
  ``lse2`` and stores dQ and delta = rowsum(dO∘O); then :func:`inverse_routing` sorts idx into, per key region,
  the query regions that picked it, and a key-major pass (one program per key region, head and key block) walks
  those regions' queries as one flattened axis, accumulates dK and dV in registers and writes them once. Every
  gradient element has one writer and a fixed summation order: bit-identical across runs. Nothing grows with
  P·topk beyond the inputs and the index: the official expanded gather's (B, P, P, nk, C) buffer never exists.
* On a GPU all three kernels are autotuned (``_common.autotuned``), keyed on (nq, nk, topk, head dim, dtypes).

Differences from official: none in the maths (same softmax, same scale). Indices outside [0, P) are masked out
instead of read (the official gather would raise): -1 is a padded route, and a query whose routes are all padded
gets zeros (not NaN). :func:`routed_attention_triton` checks the range on CPU, and on CUDA with
``ATTN_KERNELS_DEBUG=1`` (a device synchronisation per call).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (LOG2E, MAX_CONFIGS, autotuned, batch_bucket, check_runnable, debug_checks, dot_precision, launch,
                      pow2_at_least, upcast_operands)
from ._tiles import check_tile_sizes

__all__ = ["routed_attention_triton", "routed_attention_macs", "inverse_routing"]


# ---------------------------------------------------------------------------------------------------------------
# jit helpers shared by the three kernels. Under the interpreter every call of a nested jit function costs about a
# millisecond, so they are called once per program or once per tile, never per element.
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _program_rows(N: tl.constexpr, BLOCK: tl.constexpr, P, NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                  BLOCK_D: tl.constexpr):
    """Which (b, region, head, block of BLOCK of the region's N rows) this program owns, in a 1-D grid of
    B·P·heads·cdiv(N, BLOCK) programs: the row blocks are fastest, then the heads, so the heads of one region are
    neighbours and read the same routed rows while those are in L2.

    Returns (its rows, their mask, the mask of its (rows, channels) tile, bph = (b·P + region)·heads + head, b,
    region, head, the head's channels, their mask); channels split head-major (channel = head·HEAD_DIM + j)."""
    N_BLOCKS: tl.constexpr = (N + BLOCK - 1) // BLOCK
    pid = tl.program_id(0)
    bph = (pid // N_BLOCKS).to(tl.int64)
    h = bph % NUM_HEADS
    offs = (pid % N_BLOCKS) * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    valid = offs < N
    d_valid = offs_d < HEAD_DIM
    return (offs, valid, valid[:, None] & d_valid[None, :], bph, bph // NUM_HEADS // P, (bph // NUM_HEADS) % P, h,
            h * HEAD_DIM + offs_d, d_valid)


@triton.jit
def _load_rows(X, b, region, row, ch, stride_b, stride_p, stride_n, stride_c, mask, UPCAST: tl.constexpr):
    """Rows ``row`` of region ``region`` (one region for all rows, or one per row) of batch ``b``, channels ``ch``,
    of a (B, P, n, C) tensor; masked-out entries read 0. Upcast to float32 under UPCAST (see
    ``_common.upcast_operands``)."""
    x = tl.load(X + b * stride_b + (region * stride_p + row * stride_n)[:, None] + ch[None, :] * stride_c,
                mask=mask, other=0.0)
    if UPCAST:
        x = x.to(tl.float32)
    return x


@triton.jit
def _routed_tile(q, K, V, IDX, b, p, j0, ch, d_valid,  #
                 stride_ib, stride_ip, stride_it,  #
                 stride_kb, stride_kp, stride_kn, stride_kc,  #
                 stride_vb, stride_vp, stride_vn, stride_vc,  #
                 P, qk_scale, NK: tl.constexpr, TOPK: tl.constexpr, BLOCK_N: tl.constexpr,  #
                 DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Keys j0 … j0 + BLOCK_N − 1 of query region p's flattened routed key axis (key j is row j % NK of region
    idx[b, p, j // NK]) and their base-2 logits against q: the forward and the dQ pass share this tile.

    Returns (s = q kᵀ · qk_scale, k, v, valid); a key past the axis or behind an index outside [0, P) (-1: a padded
    route) is invalid and reads nothing (the memory guard). The loads are written out rather than calls of
    :func:`_load_rows`: a nested call per tile would cost the interpreter about as much as the tile's own work."""
    offs_j = j0 + tl.arange(0, BLOCK_N)
    row = offs_j % NK
    valid = offs_j < TOPK * NK
    region = tl.load(IDX + b * stride_ib + p * stride_ip + (offs_j // NK) * stride_it, mask=valid, other=0)
    region = region.to(tl.int64)
    valid = valid & (region >= 0) & (region < P)
    kv_mask = valid[:, None] & d_valid[None, :]
    k = tl.load(K + b * stride_kb + (region * stride_kp + row * stride_kn)[:, None] + ch[None, :] * stride_kc,
                mask=kv_mask, other=0.0)
    v = tl.load(V + b * stride_vb + (region * stride_vp + row * stride_vn)[:, None] + ch[None, :] * stride_vc,
                mask=kv_mask, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    return tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale, k, v, valid


# ---------------------------------------------------------------------------------------------------------------
# kernels: forward, query-major backward (dQ), key-major backward (dK, dV)
# ---------------------------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["BATCH_BUCKET"])
def _routed_attn_fwd(Q, K, V, IDX, OUT, LSE2,  #
                     stride_qb, stride_qp, stride_qn, stride_qc,  #
                     stride_kb, stride_kp, stride_kn, stride_kc,  #
                     stride_vb, stride_vp, stride_vn, stride_vc,  #
                     stride_ib, stride_ip, stride_it,  #
                     stride_ob, stride_op, stride_on, stride_oc,  #
                     P, qk_scale, BATCH_BUCKET,  #
                     NQ: tl.constexpr, NK: tl.constexpr, TOPK: tl.constexpr,  #
                     NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,  #
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,  #
                     DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    check_tile_sizes(HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D)
    # -- which (b, p, head, query block) this program owns; q stays in registers throughout --
    offs_m, m_valid, q_mask, bph, b, p, h, ch, d_valid = _program_rows(NQ, BLOCK_M, P, NUM_HEADS, HEAD_DIM, BLOCK_D)
    q = _load_rows(Q, b, p, offs_m, ch, stride_qb, stride_qp, stride_qn, stride_qc, q_mask, UPCAST)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    # -- loop over the flattened routed keys j: row j % NK of region idx[b, p, j // NK]; s = qkᵀ (base-2 logits) --
    for j0 in range(0, TOPK * NK, BLOCK_N):
        s, k, v, valid = _routed_tile(q, K, V, IDX, b, p, j0, ch, d_valid, stride_ib, stride_ip, stride_it,
                                      stride_kb, stride_kp, stride_kn, stride_kc, stride_vb, stride_vp, stride_vn,
                                      stride_vc, P, qk_scale, NK, TOPK, BLOCK_N, DOT_PRECISION, UPCAST)
        s = tl.where(valid[None, :], s, float("-inf"))
        # -- online softmax update; while every key so far was masked (padded routes) m is -inf, and the exponents
        #    are taken against 0 instead, so exp2(-inf - -inf) never makes a NaN --
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_ref)
        prob = tl.exp2(s - m_ref[:, None])
        l_i = l_i * alpha + tl.sum(prob, 1)
        acc = acc * alpha[:, None] + tl.dot(prob.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    # epilogue: a query with no valid routed key gets zeros and lse2 = +inf (its recomputed probabilities are 0)
    empty = l_i == 0.0
    l_i = tl.where(empty, 1.0, l_i)
    out = acc / l_i[:, None]
    tl.store(OUT + b * stride_ob + p * stride_op + offs_m[:, None] * stride_on + ch[None, :] * stride_oc,
             out.to(OUT.dtype.element_ty), mask=q_mask)
    tl.store(LSE2 + bph * NQ + offs_m, tl.where(empty, float("inf"), m_i + tl.log2(l_i)), mask=m_valid)


@triton.jit(do_not_specialize=["BATCH_BUCKET"])
def _routed_attn_bwd_dq(Q, K, V, IDX, OUT, DOUT, LSE2, DELTA, DQ,  #
                        stride_qb, stride_qp, stride_qn, stride_qc,  #
                        stride_kb, stride_kp, stride_kn, stride_kc,  #
                        stride_vb, stride_vp, stride_vn, stride_vc,  #
                        stride_ib, stride_ip, stride_it,  #
                        stride_ob, stride_op, stride_on, stride_oc,  #
                        stride_db, stride_dp, stride_dn, stride_dc,  #
                        P, sm_scale, qk_scale, BATCH_BUCKET,  #
                        NQ: tl.constexpr, NK: tl.constexpr, TOPK: tl.constexpr,  #
                        NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,  #
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,  #
                        DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Query-major backward pass: dQ (registers, stored once) and delta = rowsum(dO∘O), on the forward's grid."""
    check_tile_sizes(HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D)
    C: tl.constexpr = NUM_HEADS * HEAD_DIM
    # -- the forward's query block; q, dO and O stay in registers throughout --
    offs_m, m_valid, q_mask, bph, b, p, h, ch, d_valid = _program_rows(NQ, BLOCK_M, P, NUM_HEADS, HEAD_DIM, BLOCK_D)
    q = _load_rows(Q, b, p, offs_m, ch, stride_qb, stride_qp, stride_qn, stride_qc, q_mask, UPCAST)
    do = _load_rows(DOUT, b, p, offs_m, ch, stride_db, stride_dp, stride_dn, stride_dc, q_mask, UPCAST)
    o = _load_rows(OUT, b, p, offs_m, ch, stride_ob, stride_op, stride_on, stride_oc, q_mask, False)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # rowsum(dO ∘ O) = Σ_j P_ij dP_ij
    tl.store(DELTA + bph * NQ + offs_m, delta, mask=m_valid)  # read by the key-major pass
    lse2 = tl.load(LSE2 + bph * NQ + offs_m, mask=m_valid, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for j0 in range(0, TOPK * NK, BLOCK_N):
        # -- the K/V tile and its logits, exactly as the forward computes them --
        s, k, v, valid = _routed_tile(q, K, V, IDX, b, p, j0, ch, d_valid, stride_ib, stride_ip, stride_it,
                                      stride_kb, stride_kp, stride_kn, stride_kc, stride_vb, stride_vp, stride_vn,
                                      stride_vc, P, qk_scale, NK, TOPK, BLOCK_N, DOT_PRECISION, UPCAST)
        # -- recompute the probabilities from the saved logsumexp; dS = P ∘ (dO Vᵀ − delta) --
        prob = tl.exp2(s - lse2[:, None])
        prob = tl.where(m_valid[:, None] & valid[None, :], prob, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = prob * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)
    # epilogue: dQ belongs to this program alone
    dq_ptrs = DQ + ((b * P + p) * NQ + offs_m)[:, None] * C + ch[None, :]
    tl.store(dq_ptrs, (dq * sm_scale).to(DQ.dtype.element_ty), mask=q_mask)


@triton.jit(do_not_specialize=["BATCH_BUCKET"])
def _routed_attn_bwd_dkdv(Q, K, V, DOUT, LSE2, DELTA, INV, OFFS, DK, DV,  #
                          stride_qb, stride_qp, stride_qn, stride_qc,  #
                          stride_kb, stride_kp, stride_kn, stride_kc,  #
                          stride_vb, stride_vp, stride_vn, stride_vc,  #
                          stride_db, stride_dp, stride_dn, stride_dc,  #
                          P, sm_scale, qk_scale, LIST_LEN, BATCH_BUCKET,  #
                          NQ: tl.constexpr, NK: tl.constexpr, TOPK: tl.constexpr,  #
                          NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,  #
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,  #
                          DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Key-major backward pass: one program per (b, key region r, head, block of BLOCK_N keys of r).

    It walks the *flattened routed query axis* of r: query i is row i % NQ of the query region INV[b, OFFS[b, r]
    + i // NQ], the regions that routed to r in sorted order (a region listed twice contributes twice, as in the
    forward). dK and dV stay in registers and are stored once: no atomics, a fixed summation order."""
    check_tile_sizes(HEAD_DIM, BLOCK_M, BLOCK_N, BLOCK_D)
    C: tl.constexpr = NUM_HEADS * HEAD_DIM
    # -- which (b, key region r, head, key block) this program owns; its K/V block stays in registers throughout --
    offs_n, n_valid, kv_mask, _, b, r, h, ch, d_valid = _program_rows(NK, BLOCK_N, P, NUM_HEADS, HEAD_DIM, BLOCK_D)
    k = _load_rows(K, b, r, offs_n, ch, stride_kb, stride_kp, stride_kn, stride_kc, kv_mask, UPCAST)
    v = _load_rows(V, b, r, offs_n, ch, stride_vb, stride_vp, stride_vn, stride_vc, kv_mask, UPCAST)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    # -- the query regions that routed to r: INV[b, start:start + count] --
    start = tl.load(OFFS + b * (P + 1) + r)
    count = tl.load(OFFS + b * (P + 1) + r + 1) - start
    INV_ROW = INV + b * LIST_LEN + start
    for i0 in range(0, count * NQ, BLOCK_M):
        # -- load the query tile: q, dO and the saved row statistics --
        offs_i = i0 + tl.arange(0, BLOCK_M)
        valid = offs_i < count * NQ
        row = offs_i % NQ
        qreg = tl.load(INV_ROW + offs_i // NQ, mask=valid, other=0).to(tl.int64)
        q_mask = valid[:, None] & d_valid[None, :]
        q = _load_rows(Q, b, qreg, row, ch, stride_qb, stride_qp, stride_qn, stride_qc, q_mask, UPCAST)
        do = _load_rows(DOUT, b, qreg, row, ch, stride_db, stride_dp, stride_dn, stride_dc, q_mask, UPCAST)
        stat = ((b * P + qreg) * NUM_HEADS + h) * NQ + row  # (b, p, h, row) of lse2 and delta
        lse2 = tl.load(LSE2 + stat, mask=valid, other=0.0)
        delta = tl.load(DELTA + stat, mask=valid, other=0.0)
        # -- recompute P for this (query tile, key block); dV = Pᵀ dO, dK = dSᵀ Q --
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        prob = tl.exp2(s - lse2[:, None])
        prob = tl.where(valid[:, None] & n_valid[None, :], prob, 0.0)
        dv += tl.dot(tl.trans(prob.to(do.dtype)), do, input_precision=DOT_PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = prob * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=DOT_PRECISION)
    # epilogue: written once, in k's dtype (a region nobody routed to gets zeros)
    kv_ptrs = ((b * P + r) * NK + offs_n)[:, None] * C + ch[None, :]
    tl.store(DK + kv_ptrs, (dk * sm_scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + kv_ptrs, dv.to(DV.dtype.element_ty), mask=kv_mask)


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
    """Heuristic (BLOCK_M, BLOCK_N, BLOCK_D) of the query-major kernels (forward, dQ pass): the interpreter's and
    ``ATTN_KERNELS_AUTOTUNE=0``'s single configuration. 64×64 tiles cap the registers a program holds."""
    block_m = block_m or pow2_at_least(nq, 16, 64)
    block_n = block_n or pow2_at_least(topk * nk, 16, 64)
    return block_m, block_n, pow2_at_least(head_dim, 16)


def _kv_tiles(nq: int, nk: int, topk: int, block_m=None, block_n=None) -> tuple[int, int]:
    """Heuristic (BLOCK_M, BLOCK_N) of the key-major pass: BLOCK_N keys of one region, BLOCK_M of the flattened
    routed queries (on average topk query regions route to a key region, so about topk·nq of them)."""
    return block_m or pow2_at_least(nq * topk, 16, 64), block_n or pow2_at_least(nk, 16, 64)


# -- autotuning: (BLOCK_M, BLOCK_N, num_warps, num_stages). Key (NQ, NK, TOPK, HEAD_DIM, BATCH_BUCKET) + the
#    tensors' dtypes (Triton appends those). Per shape, configs larger than the problem are pruned and at most
#    MAX_CONFIGS (3) of the largest remain: DBRA's 1-4 queries per region get only the BLOCK_M = 16 "small-query"
#    configs (1-2 warps: a 16-row tile has little work for 4), BRA's 64-256-token regions the large ones. Every
#    config is one more compile inside the GPU check's time; scripts/kernels_ptxas.py compiles all of them for sm_90.
_Q_CONFIGS = [(16, 32, 2, 2), (16, 64, 2, 2), (16, 128, 4, 2), (32, 64, 4, 2), (64, 64, 4, 2), (128, 64, 8, 2)]
_KV_CONFIGS = [(16, 16, 1, 2), (32, 16, 2, 2), (64, 16, 4, 2), (32, 64, 4, 2), (64, 64, 4, 2), (128, 64, 8, 2)]
_KEY = ["NQ", "NK", "TOPK", "HEAD_DIM", "BATCH_BUCKET"]


def _configs(table):
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st) for bm, bn, w, st in table]


def _prune(rows_of, cols_of):
    """Keep configs whose tiles are not larger than the (padded) problem along either side; of those, the
    MAX_CONFIGS with the largest tiles."""
    def prune(cfgs, a):
        rows, cols = pow2_at_least(rows_of(a), 16), pow2_at_least(cols_of(a), 16)
        fits = [c for c in cfgs if c.kwargs["BLOCK_M"] <= rows and c.kwargs["BLOCK_N"] <= cols]
        fits.sort(key=lambda c: (c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"], c.kwargs["BLOCK_M"]), reverse=True)
        return fits[:MAX_CONFIGS]
    return prune


_fwd_tuned = autotuned(_routed_attn_fwd, _configs(_Q_CONFIGS), _KEY,
                       _prune(lambda a: a["NQ"], lambda a: a["TOPK"] * a["NK"]))
_dq_tuned = autotuned(_routed_attn_bwd_dq, _configs(_Q_CONFIGS), _KEY,
                      _prune(lambda a: a["NQ"], lambda a: a["TOPK"] * a["NK"]))
_dkdv_tuned = autotuned(_routed_attn_bwd_dkdv, _configs(_KV_CONFIGS), _KEY,
                        _prune(lambda a: a["NQ"] * a["TOPK"], lambda a: a["NK"]))


def _consts(q, k, idx, num_heads) -> dict:
    B, P, nq, C = q.shape
    return dict(NQ=nq, NK=k.shape[2], TOPK=idx.shape[2], NUM_HEADS=num_heads, HEAD_DIM=C // num_heads,
                BLOCK_D=pow2_at_least(C // num_heads, 16), DOT_PRECISION=dot_precision(q.dtype),
                UPCAST=upcast_operands(_routed_attn_fwd))


def _q_grid(q, num_heads):
    B, P, nq, _ = q.shape
    return lambda meta: (B * P * num_heads * triton.cdiv(nq, meta["BLOCK_M"]),)


def inverse_routing(idx: torch.Tensor, P: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse routing map: which query regions picked each key region, in O(B·P·topk log) by a stable sort.

    Returns ``inv`` (B, P·topk) int32, the query region of every routed pair sorted by key region, and ``offs``
    (B, P + 1) int32: key region r's query regions are ``inv[b, offs[b, r]:offs[b, r + 1]]``, ascending. A query
    region that lists r twice appears twice. Indices outside [0, P) fall outside every range (ignored, as the
    forward masks them). Sorting is deterministic, so the key-major pass sums in the same order on every run."""
    B, _, topk = idx.shape
    keys, order = torch.sort(idx.reshape(B, -1), dim=1, stable=True)
    inv = torch.div(order, topk, rounding_mode="floor").to(torch.int32)
    bounds = torch.arange(P + 1, device=idx.device, dtype=keys.dtype).expand(B, P + 1).contiguous()
    offs = torch.searchsorted(keys.contiguous(), bounds).to(torch.int32)
    return inv.contiguous(), offs.contiguous()


def _forward(q, k, v, idx, num_heads: int, scale: float, block_m=None, block_n=None):
    """Launch the forward kernel -> (out (B, P, nq, C), lse2 (B, P, heads, nq) float32)."""
    check_runnable(_OP, _routed_attn_fwd, q, k, v, idx)
    B, P, nq, C = q.shape
    out = torch.empty((B, P, nq, C), dtype=q.dtype, device=q.device)
    lse2 = torch.empty((B, P, num_heads, nq), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse2
    c = _consts(q, k, idx, num_heads)
    bm, bn, _ = _tiles(nq, k.shape[2], idx.shape[2], c["HEAD_DIM"], block_m, block_n)
    launch(_routed_attn_fwd, _fwd_tuned, _q_grid(q, num_heads),
           (q, k, v, idx, out, lse2, *q.stride(), *k.stride(), *v.stride(), *idx.stride(), *out.stride(),
            P, scale * LOG2E, batch_bucket(B)), c, dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=4),
           forced=bool(block_m or block_n))
    return out, lse2


def _backward(dout, q, k, v, idx, out, lse2, num_heads: int, scale: float, block_m=None, block_n=None):
    """dQ by the query-major pass, then dK/dV by the key-major pass over the inverse routing map -> (dq, dk, dv).

    Allocates dq, dk, dv in the inputs' dtype, delta (lse2's size), and the inverse map (2·B·P·topk int32).
    Nothing accumulates across programs: the gradients are bit-identical from run to run."""
    check_runnable(_OP, _routed_attn_bwd_dq, dout, q, k, v, idx)
    B, P, nq, C = q.shape
    dq = torch.empty((B, P, nq, C), dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    if dq.numel() == 0 or dk.numel() == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    c = _consts(q, k, idx, num_heads)
    nk, topk, forced = k.shape[2], idx.shape[2], bool(block_m or block_n)
    delta = torch.empty_like(lse2)
    bm, bn, _ = _tiles(nq, nk, topk, c["HEAD_DIM"], block_m, block_n)
    launch(_routed_attn_bwd_dq, _dq_tuned, _q_grid(q, num_heads),
           (q, k, v, idx, out, dout, lse2, delta, dq, *q.stride(), *k.stride(), *v.stride(), *idx.stride(),
            *out.stride(), *dout.stride(), P, scale, scale * LOG2E, batch_bucket(B)), c,
           dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=4), forced)
    inv, offs = inverse_routing(idx, P)
    bm, bn = _kv_tiles(nq, nk, topk, block_m, block_n)
    launch(_routed_attn_bwd_dkdv, _dkdv_tuned,
           lambda meta: (B * P * num_heads * triton.cdiv(nk, meta["BLOCK_N"]),),
           (q, k, v, dout, lse2, delta, inv, offs, dk, dv, *q.stride(), *k.stride(), *v.stride(), *dout.stride(),
            P, scale, scale * LOG2E, inv.shape[1], batch_bucket(B)), c, dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=4),
           forced)
    return dq, dk, dv


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

    # backward: torch's SDPA convention (torch.utils.flop_counter.sdpa_backward_flop_count): five matmuls, the
    # recomputed QKᵀ, dP = dO Vᵀ, dV = PᵀdO, dQ = dS K, dK = dSᵀ Q -> 2.5× the forward. The kernels execute seven
    # (the dQ pass and the key-major pass each recompute QKᵀ and dO Vᵀ): 3.5× the forward, docs/kernels.md §3.
    @register_flop_formula(torch.ops.attentions.routed_attention_backward)
    def _bwd_flops(dout_shape, q_shape, k_shape, v_shape, idx_shape, *args, **kwargs) -> int:
        return 5 * routed_attention_macs(q_shape, k_shape, idx_shape)


_register_flop_formulas()


def routed_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor,
                            num_heads: int, scale: float) -> torch.Tensor:
    """Fused routed attention; same contract as :func:`attentions.routing.routed_attention`.

    Args:
        q: (B, P, nq, C) queries grouped by region.
        k, v: (B, P, nk, C) keys and values grouped by region.
        idx: (B, P, topk) int64/int32 routed region indices in [0, P); -1 marks a padded route (no keys). A query
            region whose routes are all padded gets zeros. Checked on CPU, and on CUDA with ATTN_KERNELS_DEBUG=1.
        num_heads: heads, channels split head-major (C = num_heads · d).
        scale: logit scale (C^-0.5 in BRA/DBRA).

    Returns:
        (B, P, nq, C), differentiable w.r.t. q, k and v through ``attentions::routed_attention``.
    """
    _check_inputs(q, k, v, idx, num_heads)
    P = q.shape[1]
    # the range check reads idx: free on CPU, a device synchronisation on CUDA, so there only in debug mode
    check = idx.device.type == "cpu" or debug_checks()
    if check and idx.numel() and not torch.compiler.is_compiling():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < -1 or hi >= P:
            raise ValueError(f"{_OP}: idx values must lie in [0, P={P}) (or be -1, a padded route), got min {lo}, "
                             f"max {hi}")
    return torch.ops.attentions.routed_attention(q, k, v, idx, num_heads, float(scale))[0]
