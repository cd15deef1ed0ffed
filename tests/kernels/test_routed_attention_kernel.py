"""Routed-attention Triton kernel against float64 references (CPU: under TRITON_INTERPRET=1, see tests/conftest.py).

Checks the output and the gradients of q, k and v, at region sizes that are not powers of two, nq = 1 (DBRA
agents at 224²), topk = 1, topk = P, repeated indices, several query/key tiles, float32 and bfloat16; and that the
backward allocates nothing that grows with P beyond K/V's size (the official expanded gather does).
"""
from __future__ import annotations

import zlib

import pytest
import torch
from kernel_refs import DEVICE, grads_of, leaves, naive_routed_attention, rel_err
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from attentions.kernels import routed_attention as ra
from attentions.kernels.routed_attention import routed_attention_triton
from attentions.routing import routed_attention

pytestmark = pytest.mark.triton

# B, P, nq, nk, C, heads, topk
CASES = {
    "nq3-nk6": (2, 4, 3, 6, 16, 2, 2),  # neither region size a power of two
    "nq1-topkP": (1, 9, 1, 5, 32, 2, 9),  # one agent per region (DBRA at 224²), every region routed
    "topk1-d8": (1, 4, 4, 4, 32, 4, 1),  # topk = 1, head dim 8 (padded to a 16-wide tile)
    "nq20-1head": (1, 4, 20, 7, 16, 1, 3),
}


def _inputs(B, P, nq, nk, C, topk, seed, repeat=False):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, P, n, C, generator=g, dtype=torch.float64) for n in (nq, nk, nk))
    if repeat:  # indices drawn with replacement: one key region may appear twice in a routed list
        idx = torch.randint(0, P, (B, P, topk), generator=g)
    else:
        idx = torch.stack([torch.randperm(P, generator=g)[:topk] for _ in range(B * P)]).view(B, P, topk)
    return q, k, v, idx, torch.randn(B, P, nq, C, generator=g, dtype=torch.float64)


def _reference(q, k, v, idx, heads, scale, dout):
    ins = [t.clone().requires_grad_() for t in (q, k, v)]
    out = naive_routed_attention(*ins, idx, heads, scale)
    return out.detach(), grads_of(out, dout, ins)


@pytest.mark.parametrize("case", list(CASES))
def test_float32_matches_naive_reference(case):
    B, P, nq, nk, C, heads, topk = CASES[case]
    q, k, v, idx, dout = _inputs(B, P, nq, nk, C, topk, seed=zlib.crc32(case.encode()))
    scale = C**-0.5
    ref_out, ref_grads = _reference(q, k, v, idx, heads, scale, dout)
    ins = leaves(q, k, v)
    out = routed_attention_triton(*ins, idx.to(DEVICE), heads, scale)
    grads = grads_of(out, dout.to(DEVICE), ins)
    torch.testing.assert_close(out.cpu().double(), ref_out, atol=1e-4, rtol=0)
    for name, got, want in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(got.cpu().double(), want, atol=1e-4, rtol=0, msg=lambda m: f"d{name}: {m}")


def test_equals_lead_torch_reference():
    """Same values as attentions.routing.routed_attention(impl='torch') in float32."""
    q, k, v, idx, _ = _inputs(1, 4, 3, 6, 16, 2, seed=7)
    args = [t.float().to(DEVICE) for t in (q, k, v)] + [idx.to(DEVICE), 2, 0.25]
    torch.testing.assert_close(routed_attention_triton(*args), routed_attention(*args, impl="torch"),
                               atol=1e-5, rtol=0)


def test_small_tiles_repeated_indices():
    """16×16 tiles: 3 query blocks and 3 key tiles per program, tiles spanning regions; repeated routed regions
    (one key region listed twice by a query region: the key-major pass walks that query region twice)."""
    B, P, nq, nk, C, heads, topk = 1, 4, 40, 9, 16, 2, 4
    q, k, v, idx, dout = _inputs(B, P, nq, nk, C, topk, seed=3, repeat=True)
    assert any(len(set(row)) < topk for row in idx.view(-1, topk).tolist()), "draw should repeat an index"
    scale = 0.3
    ref_out, ref_grads = _reference(q, k, v, idx, heads, scale, dout)
    f = [t.float().to(DEVICE) for t in (q, k, v)]
    out, lse2 = ra._forward(*f, idx.to(DEVICE), heads, scale, block_m=16, block_n=16)
    grads = ra._backward(dout.float().to(DEVICE), *f, idx.to(DEVICE), out, lse2, heads, scale, 16, 16)
    torch.testing.assert_close(out.cpu().double(), ref_out, atol=1e-4, rtol=0)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got.cpu().double(), want, atol=1e-4, rtol=0)


def test_bfloat16_within_tolerance():
    """bf16 inputs (fp32 accumulation): ‖err‖/‖ref‖ ≤ 1e-2 for out and every grad (docs/kernels.md)."""
    B, P, nq, nk, C, heads, topk = CASES["nq3-nk6"]
    q, k, v, idx, dout = _inputs(B, P, nq, nk, C, topk, seed=11)
    ref_out, ref_grads = _reference(q, k, v, idx, heads, C**-0.5, dout)
    ins = leaves(q, k, v, dtype=torch.bfloat16)
    out = routed_attention_triton(*ins, idx.to(DEVICE), heads, C**-0.5)
    assert out.dtype == torch.bfloat16
    grads = grads_of(out, dout.to(DEVICE), ins)
    assert rel_err(out.cpu(), ref_out) < 1e-2
    for got, want in zip(grads, ref_grads):
        assert got.dtype == torch.bfloat16 and rel_err(got.cpu(), want) < 1e-2


class _StorageLog(TorchDispatchMode):
    """Records the byte size of every new storage an op returns (views of existing storages are not counted)."""

    def __init__(self, known):
        super().__init__()
        self.seen = {t.untyped_storage().data_ptr() for t in known}
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                st = t.untyped_storage()
                if st.data_ptr() not in self.seen and st.nbytes() > 0:
                    self.seen.add(st.data_ptr())
                    self.sizes.append(st.nbytes())
        return out


@pytest.mark.skipif(DEVICE != "cpu", reason="storage accounting by dispatch mode on CPU tensors")
def test_backward_allocates_nothing_proportional_to_P():
    """The kernel's backward allocates dq, float32 dK/dV and nothing larger; the official path's backward
    allocates a (B, P, P, nk, C) buffer (P× K), which the same accounting catches."""
    B, P, nq, nk, C, heads, topk = 1, 9, 2, 6, 16, 2, 2
    q, k, v, idx, dout = (t.float() if t.is_floating_point() else t for t in _inputs(B, P, nq, nk, C, topk, 5))
    k_bytes = k.numel() * 4

    # official expanded gather, for contrast
    ins = [t.clone().requires_grad_() for t in (q, k, v)]
    out = routed_attention(*ins, idx, heads, 0.25, impl="official")
    with _StorageLog(ins + [out, dout, idx]) as log:
        out.backward(dout)
    assert max(log.sizes) >= P * k_bytes

    out, lse2 = ra._forward(q, k, v, idx, heads, 0.25)
    with _StorageLog([q, k, v, idx, out, lse2, dout]) as log:
        dq, dk, dv = ra._backward(dout, q, k, v, idx, out, lse2, heads, 0.25)
    index_bytes = 4 * idx.numel() * 8 + 3 * (P + 1) * 8  # sort keys/order, inverse map, offsets (B = 1)
    assert max(log.sizes) <= max(k_bytes, q.numel() * 4, index_bytes)
    # dq, dK, dV in the inputs' dtype + delta (lse2's size) + the inverse routing map: nothing grows with P·K
    assert sum(log.sizes) <= q.numel() * 4 + 2 * k_bytes + lse2.numel() * 4 + index_bytes
    assert torch.isfinite(dk).all() and dk.abs().sum() > 0  # the accounting ran a real backward


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA allocator accounting")
def test_backward_peak_memory_on_cuda():
    """Backward peak above the saved tensors: a few K/V sizes for the kernel, ≥ P × K for the official gather."""
    B, P, nq, nk, C, heads, topk = 2, 49, 16, 16, 64, 2, 4
    q, k, v, idx, dout = (t.float().cuda() if t.is_floating_point() else t.cuda()
                          for t in _inputs(B, P, nq, nk, C, topk, 6))
    k_bytes = k.numel() * 4

    def backward_peak(impl):
        ins = [t.clone().requires_grad_() for t in (q, k, v)]
        out = routed_attention(*ins, idx, heads, 0.25, impl=impl)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out.backward(dout)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    assert backward_peak("official") >= P * k_bytes
    assert backward_peak("triton") <= 4 * k_bytes  # dq, dK, dV written once in the inputs' dtype, delta, index


def _naive_inverse(idx, P):
    """Python loops: for every (b, key region r), the query regions p with r in idx[b, p], p ascending, once per
    occurrence; out-of-range indices belong to no key region."""
    lists = [[[p for p in range(idx.shape[1]) for t in idx[b, p].tolist() if t == r] for r in range(P)]
             for b in range(idx.shape[0])]
    return lists


def test_inverse_routing_map_matches_loops():
    """The sort-built inverse map lists, for each key region, the query regions that picked it (repeats twice,
    out-of-range indices nowhere), in ascending order: the fixed summation order of the key-major pass."""
    g = torch.Generator().manual_seed(0)
    B, P, topk = 3, 7, 4
    idx = torch.randint(-1, P + 1, (B, P, topk), generator=g)  # repeats and out-of-range values
    for dtype in (torch.int64, torch.int32):
        inv, offs = ra.inverse_routing(idx.to(dtype), P)
        assert inv.dtype == offs.dtype == torch.int32 and offs.shape == (B, P + 1)
        got = [[inv[b, offs[b, r]:offs[b, r + 1]].tolist() for r in range(P)] for b in range(B)]
        assert got == _naive_inverse(idx, P)


def _skewed_idx(B, P, topk, g):
    """Skewed routing, as trained routers produce: every query region routes to region 0 and to region 1 (twice
    in half of the lists), the rest at random among the first half: key region 0 receives P query regions, the
    second half none."""
    idx = torch.randint(0, P // 2, (B, P, topk), generator=g)
    idx[:, :, 0] = 0
    idx[:, :, 1] = 1
    idx[:, ::2, 2] = 1
    return idx


@pytest.mark.parametrize("nq, nk", [(1, 5), pytest.param(3, 20, marks=pytest.mark.slow)])  # 3-20: ~20 s interpreted
def test_key_major_backward_skewed_routing_small_tiles(nq, nk):
    """Key-major pass with 16-wide tiles over the flattened routed-query axis: a tile spans several query regions
    (nq = 1, 3), key region 0 is picked by every query region (the list spans several tiles), regions nobody
    picked get zero dK/dV. float32 against the float64 loop reference at 1e-4."""
    g = torch.Generator().manual_seed(nq)
    B, P, C, heads, topk = 2, 9, 16, 2, 4
    q, k, v, _, dout = _inputs(B, P, nq, nk, C, topk, seed=nq)
    idx = _skewed_idx(B, P, topk, g)
    ref_out, ref_grads = _reference(q, k, v, idx, heads, 0.4, dout)
    f = [t.float().to(DEVICE) for t in (q, k, v)]
    out, lse2 = ra._forward(*f, idx.to(DEVICE), heads, 0.4, block_m=16, block_n=16)
    grads = ra._backward(dout.float().to(DEVICE), *f, idx.to(DEVICE), out, lse2, heads, 0.4, 16, 16)
    torch.testing.assert_close(out.cpu().double(), ref_out, atol=1e-4, rtol=0)
    for name, got, want in zip("qkv", grads, ref_grads):
        torch.testing.assert_close(got.cpu().double(), want, atol=1e-4, rtol=0, msg=lambda m: f"d{name}: {m}")
    unrouted = [r for r in range(P) if not (idx[0] == r).any()]
    assert unrouted and grads[1][0, unrouted].abs().max() == 0


def test_gradients_bit_identical_across_runs():
    """Two backward runs give bit-identical dq, dk, dv (bf16 and float32, skewed routing). On a GPU this is the
    determinism the atomics-based backward lacked; the kernel source is checked to hold no atomics."""
    import inspect

    for kernel in (ra._routed_attn_fwd, ra._routed_attn_bwd_dq, ra._routed_attn_bwd_dkdv):
        assert "tl.atomic" not in inspect.getsource(kernel.fn)
    g = torch.Generator().manual_seed(5)
    B, P, nq, nk, C, heads, topk = 1, 6, 2, 8, 32, 2, 3
    q, k, v, _, dout = _inputs(B, P, nq, nk, C, topk, seed=5)
    idx = _skewed_idx(B, P, topk, g).to(DEVICE)
    for dtype in (torch.float32, torch.bfloat16):
        runs = []
        for _ in range(2):
            ins = leaves(q, k, v, dtype=dtype)
            out = routed_attention_triton(*ins, idx, heads, C**-0.5)
            runs.append(grads_of(out, dout.to(DEVICE), ins))
        for a, b in zip(*runs):
            assert torch.equal(a, b)


def _naive_padded(q, k, v, idx, heads, scale):
    """The float64 loop reference over the valid routes only (-1 = padded); a region with none gets zeros."""
    out = torch.zeros_like(q)
    for b in range(q.shape[0]):
        for p in range(q.shape[1]):
            routes = [r for r in idx[b, p].tolist() if r >= 0]
            if routes:
                sub = torch.tensor(routes)[None, None]
                out[b, p] = naive_routed_attention(q[b:b + 1, p:p + 1], k[b:b + 1], v[b:b + 1], sub, heads,
                                                   scale)[0, 0]
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_padded_routes_give_zeros_not_nan(dtype):
    """Padded routes (-1): a query region with every route padded sees only masked key tiles, so its online
    softmax starts from m = -inf (exp2(-inf - -inf) was a NaN); it must get zeros and zero gradients, and the other
    regions (some routes padded, with 16-key tiles that are fully padded) must match the loop reference over
    their valid routes; dK/dV of keys nobody validly routed to are zero."""
    B, P, nq, nk, C, heads, topk = 1, 5, 3, 16, 32, 2, 3
    q, k, v, idx, dout = _inputs(B, P, nq, nk, C, topk, seed=13)
    idx[0, 0] = -1  # every route padded
    idx[0, 2, 1:] = -1  # one valid route, two fully padded key tiles (nk = 16 = BLOCK_N)
    idx[0, 4, 0] = -1  # padding first: the first tile of the online softmax is fully masked
    ins = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_out = _naive_padded(*ins, idx, heads, C**-0.5)
    ref_grads = grads_of(ref_out, dout, ins)
    got = leaves(q, k, v, dtype=dtype)
    out, lse2 = ra._forward(*(t.detach() for t in got), idx.to(DEVICE), heads, C**-0.5, block_m=16, block_n=16)
    grads = ra._backward(dout.to(DEVICE, dtype), *(t.detach() for t in got), idx.to(DEVICE), out, lse2, heads,
                         C**-0.5, 16, 16)
    for name, t in zip(("out", "dq", "dk", "dv"), (out, *grads)):
        assert torch.isfinite(t).all(), f"{name} has NaN/inf"
    assert out[0, 0].abs().max() == 0 and grads[0][0, 0].abs().max() == 0
    atol = 1e-4 if dtype == torch.float32 else None
    for name, a, want in zip(("out", "dq", "dk", "dv"), (out, *grads), (ref_out.detach(), *ref_grads)):
        if atol:
            torch.testing.assert_close(a.cpu().double(), want, atol=atol, rtol=0, msg=lambda m: f"{name}: {m}")
        else:
            assert rel_err(a.cpu(), want) < 1e-2, name
    public = routed_attention_triton(*(t.detach() for t in got), idx.to(DEVICE), heads, C**-0.5)
    # the public op accepts -1 (range check: [-1, P)); its heuristic tiles differ, so equal up to rounding
    torch.testing.assert_close(public, out, atol=1e-5 if atol else 2e-2, rtol=0)
