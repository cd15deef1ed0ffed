"""The kernels as torch custom ops: opcheck (schema, fake/meta, autograd registration), torch.compile, the FLOP
formulas under FlopCounterMode, input validation and the CPU-without-interpreter error."""
from __future__ import annotations

import pytest
import torch
from kernel_refs import DEVICE
from torch.utils.flop_counter import FlopCounterMode

from attentions.kernels import _common, pixel_agent_attention_triton, routed_attention_triton

pytestmark = pytest.mark.triton


def _routed_inputs(B=1, P=4, nq=2, nk=3, C=16, topk=2):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, P, nq, C, generator=g)
    k, v = torch.randn(B, P, nk, C, generator=g), torch.randn(B, P, nk, C, generator=g)
    idx = torch.stack([torch.randperm(P, generator=g)[:topk] for _ in range(B * P)]).view(B, P, topk)
    return [t.to(DEVICE) for t in (q, k, v, idx)]


def _pixel_inputs(B=1, m=2, G=2, H=3, W=4, Ns=5, d=16, T=5):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(B * m, H * W, d, generator=g)
    k, v = torch.randn(B * m, Ns, d, generator=g), torch.randn(B * m, Ns, d, generator=g)
    pos = torch.rand(B * G, Ns, 2, generator=g) * 2 - 1
    table = torch.randn(m, T, T, generator=g)
    return [t.to(DEVICE) for t in (q, k, v, pos, table)], (G, H, W)


def _with_grad(ts):
    return [t.requires_grad_() if t.is_floating_point() else t for t in ts]


def test_opcheck_routed():
    q, k, v, idx = _with_grad(_routed_inputs())
    torch.library.opcheck(torch.ops.attentions.routed_attention.default, (q, k, v, idx, 2, 0.25))


def test_opcheck_pixel_agent():
    ts, (G, H, W) = _pixel_inputs()
    torch.library.opcheck(torch.ops.attentions.pixel_agent_attention.default, (*_with_grad(ts), G, H, W, 0.3))


def test_torch_compile_fullgraph_matches_eager():
    """Both ops in one compiled function (aot_eager: the fake impls trace, the real kernels run)."""
    q, k, v, idx = _routed_inputs()
    ts, (G, H, W) = _pixel_inputs(H=2, W=2, Ns=3)  # B·m = 2 pixel-query rows of 4 pixels

    def fn(q, k, v, pk, pv, pos, table):
        o = routed_attention_triton(q, k, v, idx, 2, 0.25)  # (B=1, P=4, nq=2, C=16)
        pq = o.reshape(2, 4, 16)  # reused as pixel queries (B·m=2, H·W=4, d=16)
        return pixel_agent_attention_triton(pq, pk, pv, pos, table, G, H, W, 0.3).square().sum()

    args = [q, k, v] + ts[1:]
    eager_in, comp_in = _with_grad([t.clone() for t in args]), _with_grad([t.clone() for t in args])
    want = fn(*eager_in)
    want.backward()
    got = torch.compile(fn, backend="aot_eager", fullgraph=True)(*comp_in)
    got.backward()
    torch.testing.assert_close(got, want)
    for a, b in zip(comp_in, eager_in):
        torch.testing.assert_close(a.grad, b.grad)


def test_flop_counter_counts_both_passes():
    """FLOPs = 2·MACs; MACs of the forward: 2·B·P·nq·topk·nk·C (routed), 2·B·m·H·W·Ns·d (pixel-agent); the
    backward counts 2.5× the forward (five matmuls incl. the recomputed QKᵀ), as torch counts SDPA's backward."""
    B, P, nq, nk, C, topk = 1, 4, 2, 3, 16, 2
    q, k, v, idx = _with_grad(_routed_inputs(B, P, nq, nk, C, topk))
    with FlopCounterMode(display=False) as fc:
        routed_attention_triton(q, k, v, idx, 2, 0.25).sum().backward()
    fwd = 2 * (2 * B * P * nq * topk * nk * C)
    counts = {str(op): n for op, n in fc.get_flop_counts()["Global"].items()}
    assert counts == {"attentions.routed_attention": fwd, "attentions.routed_attention_backward": 5 * fwd // 2}

    ts, (G, H, W) = _pixel_inputs(B=1, m=2, G=2, H=3, W=4, Ns=5, d=16)
    with FlopCounterMode(display=False) as fc:
        pixel_agent_attention_triton(*_with_grad(ts), G, H, W, 0.3).sum().backward()
    fwd = 2 * (2 * 2 * 12 * 5 * 16)
    counts = {str(op): n for op, n in fc.get_flop_counts()["Global"].items()}
    assert counts == {"attentions.pixel_agent_attention": fwd,
                      "attentions.pixel_agent_attention_backward": 5 * fwd // 2}


@pytest.mark.parametrize("change, match", [
    (lambda a: a.__setitem__(1, a[1][:, :3]), "k and v must be"),
    (lambda a: a.__setitem__(3, a[3].float()), "idx must be int64"),
    (lambda a: a.__setitem__(3, a[3][..., None]), "idx must be"),
    (lambda a: a.__setitem__(4, 3), "num_heads=3 must divide"),
    (lambda a: a.__setitem__(2, a[2].double()), "share one dtype"),
])
def test_routed_rejects_bad_input(change, match):
    args = _routed_inputs() + [2, 0.25]
    change(args)
    with pytest.raises(ValueError, match=match):
        routed_attention_triton(*args)


@pytest.mark.parametrize("bad", [4, -2])
def test_routed_rejects_out_of_range_index(bad, monkeypatch):
    """Indices outside [-1, P) raise, naming the range: always on CPU, and on CUDA with ATTN_KERNELS_DEBUG=1 (the
    debug flag; without it a CUDA call does not synchronise to read idx). -1 (a padded route) is accepted."""
    monkeypatch.setenv("ATTN_KERNELS_DEBUG", "1")
    q, k, v, idx = _routed_inputs()
    idx[0, 1, 0] = -1
    assert torch.isfinite(routed_attention_triton(q, k, v, idx, 2, 0.25)).all()
    idx[0, 1, 0] = bad
    with pytest.raises(ValueError, match=r"idx values must lie in \[0, P=4\) \(or be -1"):
        routed_attention_triton(q, k, v, idx, 2, 0.25)


@pytest.mark.parametrize("change, match", [
    (lambda a: a.__setitem__(0, a[0][:, :-1]), r"q has 11 pixels but H·W = 3·4 = 12"),
    (lambda a: a.__setitem__(3, a[3][:1]), "pos must be"),
    (lambda a: a.__setitem__(5, 3), "n_groups=3 must divide"),
    (lambda a: (a.__setitem__(1, a[1][:, :0]), a.__setitem__(2, a[2][:, :0])), r"no agent \(Ns = 0\)"),
])
def test_pixel_agent_rejects_bad_input(change, match):
    ts, (G, H, W) = _pixel_inputs()
    args = ts + [G, H, W, 0.3]
    change(args)
    with pytest.raises(ValueError, match=match):
        pixel_agent_attention_triton(*args)


@pytest.mark.skipif(DEVICE != "cpu", reason="the CPU-without-interpreter path")
def test_cpu_without_interpreter_says_how_to_fix(monkeypatch):
    monkeypatch.setattr(_common, "interpreted", lambda kernel: False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1 .* impl='torch'"):
        routed_attention_triton(*_routed_inputs(), 2, 0.25)


def test_backward_flop_convention_matches_torch_sdpa():
    """The routed op with one routed region holding every key is plain attention: its forward and backward FLOPs
    equal torch's own SDPA formulas (``sdpa_flop_count``, ``sdpa_backward_flop_count``, the ones FlopCounterMode
    applies to the flash/efficient/cuDNN kernels) on the same problem: backward 2.5× forward."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    B, n, C, heads = 1, 16, 32, 2
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(B, 1, n, C, generator=g).to(DEVICE).requires_grad_() for _ in range(3))
    idx = torch.zeros(B, 1, 1, dtype=torch.long, device=DEVICE)
    with FlopCounterMode(display=False) as fc:
        routed_attention_triton(q, k, v, idx, heads, 0.25).sum().backward()
    ours = {str(op): c for op, c in fc.get_flop_counts()["Global"].items()}
    shape = (B, heads, n, C // heads)
    assert ours["attentions.routed_attention"] == sdpa_flop_count(shape, shape, shape)
    assert ours["attentions.routed_attention_backward"] == sdpa_backward_flop_count(shape, shape, shape, shape)


def test_autotuning_configs_per_shape():
    """Autotuning: off under the interpreter (one heuristic configuration, so CPU tests stay fast); on a GPU the
    configurations are pruned per shape: DBRA's 1-4 queries per region get only 16-row "small-query" tiles, the
    key-major pass only key blocks that fit a region, and the pixel backward only tiles within its register cap."""
    from attentions.kernels import pixel_agent_attention as pa
    from attentions.kernels import routed_attention as ra

    if _common.interpreted(ra._routed_attn_fwd):
        assert ra._fwd_tuned is ra._dq_tuned is ra._dkdv_tuned is pa._fwd_tuned is pa._bwd_tuned is None
    q_prune = ra._prune(lambda a: a["NQ"], lambda a: a["TOPK"] * a["NK"])
    kv_prune = ra._prune(lambda a: a["NQ"] * a["TOPK"], lambda a: a["NK"])
    dbra = dict(NQ=1, NK=64, TOPK=4)
    assert {c.kwargs["BLOCK_M"] for c in q_prune(ra._configs(ra._Q_CONFIGS), dbra)} == {16}
    assert {c.kwargs["BLOCK_N"] for c in kv_prune(ra._configs(ra._KV_CONFIGS), dict(NQ=4, NK=16, TOPK=16))} == {16}
    bra = dict(NQ=256, NK=256, TOPK=1)
    kept = q_prune(ra._configs(ra._Q_CONFIGS), bra)  # everything fits: the three largest tiles remain
    assert [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in kept] == [(128, 64), (64, 64), (32, 64)]
    # at most MAX_CONFIGS per kernel and shape, at every benchmark shape (each is a compile in the GPU check)
    for nq, nk, topk in ((1, 64, 4), (4, 256, 4), (256, 256, 1), (64, 64, 4), (16, 16, 16), (4, 16, 16)):
        shape = dict(NQ=nq, NK=nk, TOPK=topk)
        assert 1 <= len(q_prune(ra._configs(ra._Q_CONFIGS), shape)) <= _common.MAX_CONFIGS
        assert 1 <= len(kv_prune(ra._configs(ra._KV_CONFIGS), shape)) <= _common.MAX_CONFIGS
    for table in (pa._FWD_CONFIGS, pa._BWD_CONFIGS):
        for block_s in table:
            kept = pa._prune(table)(pa._configs(table), dict(BLOCK_S=block_s, HW=128 * 128))
            assert 1 <= len(kept) <= _common.MAX_CONFIGS
            assert {(c.kwargs["BLOCK_M"], c.num_warps) for c in kept} == set(table[block_s])
    tiny = pa._prune(pa._FWD_CONFIGS)(pa._configs(pa._FWD_CONFIGS), dict(BLOCK_S=16, HW=9))
    assert [c.kwargs["BLOCK_M"] for c in tiny] == [32]  # none fits 9 pixels: the smallest listed tile
    assert _common.batch_bucket(1) == 1 and _common.batch_bucket(3) == 4 and _common.batch_bucket(64) == 64
