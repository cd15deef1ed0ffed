"""Region partition, top-k routing, gathers and routed attention (attentions/routing.py).

References are written here from the spec (shared/design/bra-biformer.md §2.3), with explicit loops or einsum
in float64, independent of the module's reshapes.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from attentions import routing
from attentions.routing import (
    gather_regions,
    gather_regions_official,
    region_merge,
    region_partition,
    route_topk,
    routed_attention,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _region_tokens(x: torch.Tensor, n_win: int, r: int) -> torch.Tensor:
    """Tokens of region r of x (B, H, W, C), row-major, cut by slicing the image: (B, h·w, C)."""
    B, H, W, C = x.shape
    h, w = H // n_win, W // n_win
    i, j = divmod(r, n_win)
    return x[:, i * h : (i + 1) * h, j * w : (j + 1) * w].reshape(B, h * w, C)


def test_region_partition_cuts_row_major_regions_and_merge_inverts_it():
    x = torch.randn(2, 6, 9, 3, generator=_gen())
    parts = region_partition(x, 3)
    assert parts.shape == (2, 9, 6, 3)
    for r in range(9):
        assert torch.equal(parts[:, r], _region_tokens(x, 3, r))
    assert torch.equal(region_merge(parts, 3, 6, 9), x)


def _hand_made_image() -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """q, k images (1, 4, 4, 2) with 2×2 regions of known means, and the expected top-2 per query region.

    Region means: q_r = rows of QM, k_r = rows of KM, so the affinities are QM @ KMᵀ. Each token deviates from
    its region mean by ±D (zero sum per region), large enough that the first token alone would route
    differently: routing must use the mean.
    """
    QM = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    KM = torch.tensor([[0.1, 0.0], [0.3, -1.0], [2.0, 0.5], [-0.5, 1.5]])
    # affinities QM @ KMᵀ:
    #   region 0: [0.1, 0.3, 2.0, -0.5]  -> top-2 = 2, 1
    #   region 1: [0.0, -1.0, 0.5, 1.5]  -> 3, 2
    #   region 2: [0.1, -0.7, 2.5, 1.0]  -> 2, 3
    #   region 3: [-0.1, -0.3, -2.0, 0.5] -> 3, 0
    expected = [[2, 1], [3, 2], [2, 3], [3, 0]]
    D = torch.tensor([[5.0, -7.0], [-5.0, 7.0], [-5.0, -7.0], [5.0, 7.0]])  # per-token deviation, sums to 0

    def image(means):
        img = torch.empty(1, 4, 4, 2)
        for r in range(4):
            i, j = divmod(r, 2)
            img[0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2] = (means[r] + D).view(2, 2, 2)
        return img

    return image(QM), image(KM), expected


def test_routing_picks_highest_mean_affinity_and_gather_returns_those_regions_tokens():
    q_img, k_img, expected = _hand_made_image()
    q, k = region_partition(q_img, 2), region_partition(k_img, 2)
    idx = route_topk(q.mean(2), k.mean(2), topk=2, scale=2**-0.5)
    assert idx.tolist() == [expected]
    for gather in (gather_regions, gather_regions_official):
        got = gather(k, idx)  # (1, 4, 2, 4, 2)
        for r in range(4):
            for j, src in enumerate(expected[r]):
                assert torch.equal(got[0, r, j], _region_tokens(k_img, 2, src)[0])


def test_route_topk_is_detached():
    qr = torch.randn(2, 4, 8, requires_grad=True)
    kr = torch.randn(2, 4, 8, requires_grad=True)
    idx = route_topk(qr * 2, kr * 2, topk=3, scale=0.5)
    assert idx.grad_fn is None and not idx.requires_grad
    assert idx.shape == (2, 4, 3) and idx.dtype == torch.int64


def _gather_case():
    B, P, n, C, k = 3, 9, 4, 5, 3
    kv = torch.randn(B, P, n, C, generator=_gen(1), dtype=torch.float64)
    # random routes with repeats across query regions, so gradients from several queries meet in one region
    idx = torch.randint(0, P, (B, P, k), generator=_gen(2))
    return kv, idx


def test_lean_gather_equals_official_values_and_gradients():
    kv, idx = _gather_case()
    kv = kv.float()
    up = torch.randn(*idx.shape, *kv.shape[2:], generator=_gen(3))
    grads = []
    for gather in (gather_regions, gather_regions_official):
        src = kv.clone().requires_grad_()
        out = gather(src, idx)
        (out * up).sum().backward()
        grads.append((out.detach(), src.grad))
    assert torch.equal(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-6, rtol=0)
    # the official gradient is the sum of the upstream gradient over every (query region, slot) that chose a region
    ref = torch.zeros_like(kv)
    B, P, k = idx.shape
    for b in range(B):
        for p in range(P):
            for j in range(k):
                ref[b, idx[b, p, j]] += up[b, p, j]
    torch.testing.assert_close(grads[0][1], ref, atol=1e-6, rtol=0)


class _LargestAllocation(TorchDispatchMode):
    """Records the largest number of elements any op returns while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("gather", [gather_regions, gather_regions_official], ids=["lean", "official"])
def test_gather_backward_allocation(gather):
    kv, idx = _gather_case()
    P = kv.shape[1]
    src = kv.requires_grad_()
    out = gather(src, idx)
    with _LargestAllocation() as mode:
        out.backward(torch.ones_like(out))
    if gather is gather_regions:
        assert mode.largest <= max(kv.numel(), out.numel())  # an index_add into a kv-sized buffer
    else:  # the blow-up the lean gather removes: a (B, P, P, n, C) buffer
        assert mode.largest >= P * kv.numel()


def _naive_routed_attention(q, k, v, idx, num_heads, scale):
    """Float64 loops over batch, region and head, gathering by Python indexing."""
    q, k, v = q.double(), k.double(), v.double()
    B, P, nq, C = q.shape
    d = C // num_heads
    out = torch.zeros(B, P, nq, C, dtype=torch.float64)
    for b in range(B):
        for p in range(P):
            keys = torch.cat([k[b, r] for r in idx[b, p].tolist()])  # (topk·nk, C)
            vals = torch.cat([v[b, r] for r in idx[b, p].tolist()])
            for h in range(num_heads):
                sl = slice(h * d, (h + 1) * d)
                logits = torch.einsum("id,jd->ij", q[b, p, :, sl] * scale, keys[:, sl])
                out[b, p, :, sl] = torch.softmax(logits, dim=-1) @ vals[:, sl]
    return out


ROUTED_CASES = {
    "bra-like": (2, 4, 6, 6, 8, 2, 2),  # B, P, nq, nk, C, heads, topk
    "agents-fewer-queries": (1, 9, 2, 5, 6, 3, 4),  # DBRA-like: nq != nk
    "topk=P": (2, 4, 3, 3, 4, 1, 4),
}


def _routed_inputs(B, P, nq, nk, C, topk, seed=0):
    g = _gen(seed)
    q, k, v = (torch.randn(B, P, n, C, generator=g) for n in (nq, nk, nk))
    idx = torch.stack([torch.stack([torch.randperm(P, generator=g)[:topk] for _ in range(P)]) for _ in range(B)])
    return q, k, v, idx


@pytest.mark.parametrize("case", ROUTED_CASES, ids=list(ROUTED_CASES))
@pytest.mark.parametrize("impl", ["torch", "official"])
def test_routed_attention_matches_naive_reference(case, impl):
    B, P, nq, nk, C, heads, topk = ROUTED_CASES[case]
    q, k, v, idx = _routed_inputs(B, P, nq, nk, C, topk)
    got = routed_attention(q, k, v, idx, heads, C**-0.5, impl=impl)
    ref = _naive_routed_attention(q, k, v, idx, heads, C**-0.5)
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=0)


def test_chunks_cover_every_region_within_the_budget():
    for args in [(392, 2, 64, 4, 64, 64), (392, 2, 1, 4, 64, 64), (7, 1, 3, 2, 5, 4), (3, 8, 4096, 49, 4096, 256)]:
        spans = list(routing._chunks(*args))
        assert spans[0][0] == 0 and spans[-1][1] == args[0]
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        _, m, nq, topk, nk, C = args
        per_region = topk * nk * (2 * C + m * nq)  # gathered K and V, attention matrix
        assert all(stop - start == 1 or (stop - start) * per_region <= routing._CHUNK_ELEMENTS for start, stop in spans)


@pytest.mark.parametrize("regions_per_chunk", [1, 3, 10_000], ids=["one-region", "uneven", "single-chunk"])
@pytest.mark.parametrize("case", ROUTED_CASES, ids=list(ROUTED_CASES))
def test_lean_routed_attention_equals_official_values_and_gradients(case, regions_per_chunk, monkeypatch):
    step = regions_per_chunk
    monkeypatch.setattr(routing, "_chunks", lambda n, *_: ((r, min(n, r + step)) for r in range(0, n, step)))
    B, P, nq, nk, C, heads, topk = ROUTED_CASES[case]
    q0, k0, v0, idx = _routed_inputs(B, P, nq, nk, C, topk, seed=5)
    up = torch.randn(B, P, nq, C, generator=_gen(6))
    results = {}
    for impl in ("torch", "official"):
        q, k, v = (t.clone().requires_grad_() for t in (q0, k0, v0))
        out = routed_attention(q, k, v, idx, heads, C**-0.5, impl=impl)
        (out * up).sum().backward()
        results[impl] = (out.detach(), q.grad, k.grad, v.grad)
    for lean, official in zip(results["torch"], results["official"]):
        torch.testing.assert_close(lean, official, atol=1e-6, rtol=0)


def test_lean_routed_attention_accepts_non_contiguous_views():
    # BRA hands in q, k, v as split views of one (B, P, n, 3C) tensor
    B, P, n, C = 2, 4, 3, 4
    qkv = torch.randn(B, P, n, 3 * C, generator=_gen(7), requires_grad=True)
    idx = torch.randint(0, P, (B, P, 2), generator=_gen(8))
    grads = []
    for impl in ("torch", "official"):
        qkv.grad = None
        out = routed_attention(*qkv.split(C, dim=-1), idx, 2, C**-0.5, impl=impl)
        out.square().sum().backward()
        grads.append((out.detach(), qkv.grad.clone()))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning")
def test_traced_torch_path_uses_plain_ops_with_the_same_result():
    q, k, v, idx = _routed_inputs(1, 4, 3, 3, 4, 2)

    def fn(q, k, v):
        return routed_attention(q, k, v, idx, 2, 0.5, impl="torch")

    traced = torch.jit.trace(fn, (q, k, v), check_trace=False)
    kinds = {node.kind() for node in traced.graph.nodes()}
    assert "prim::PythonOp" not in kinds and "aten::matmul" in kinds  # FLOP counters can see the matmuls
    torch.testing.assert_close(traced(q, k, v), fn(q, k, v), atol=1e-6, rtol=0)


def test_unknown_impl_is_refused():
    q, k, v, idx = _routed_inputs(1, 4, 2, 2, 4, 1)
    with pytest.raises(ValueError, match="impl='fast'"):
        routed_attention(q, k, v, idx, 2, 0.5, impl="fast")
