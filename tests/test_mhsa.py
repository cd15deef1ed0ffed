"""mhsa: global multi-head self-attention, against a float64 reference written from the ViT definition."""
from __future__ import annotations

import pytest
import torch

import attentions


def naive_mhsa(x, qkv_w, qkv_b, proj_w, proj_b, heads):
    """Explicit loops over heads, float64."""
    B, H, W, C = x.shape
    t = x.reshape(B, H * W, C).double()
    qkv = t @ qkv_w.double().T + (qkv_b.double() if qkv_b is not None else 0)
    q, k, v = qkv.split(C, dim=-1)
    d = C // heads
    outs = []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        logits = torch.einsum("bnd,bmd->bnm", q[..., sl], k[..., sl]) / d**0.5
        outs.append(torch.einsum("bnm,bmd->bnd", logits.softmax(-1), v[..., sl]))
    out = torch.cat(outs, -1) @ proj_w.double().T + proj_b.double()
    return out.reshape(B, H, W, C)


@pytest.mark.parametrize("impl", ["sdpa", "torch"])
@pytest.mark.parametrize("shape", [(1, 4, 4), (2, 3, 5), (3, 7, 1)])
def test_matches_naive_reference(impl, shape):
    torch.manual_seed(0)
    B, H, W = shape
    m = attentions.build("mhsa", dim=16, num_heads=4, impl=impl)
    x = torch.randn(B, H, W, 16)
    ref = naive_mhsa(x, m.qkv.weight, m.qkv.bias, m.proj.weight, m.proj.bias, 4)
    torch.testing.assert_close(m(x).double(), ref, atol=1e-5, rtol=0)


def test_no_qkv_bias_matches_reference():
    torch.manual_seed(1)
    m = attentions.build("mhsa", dim=8, num_heads=2, qkv_bias=False)
    x = torch.randn(2, 3, 3, 8)
    ref = naive_mhsa(x, m.qkv.weight, None, m.proj.weight, m.proj.bias, 2)
    torch.testing.assert_close(m(x).double(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_is_close_to_float32(dtype):
    torch.manual_seed(0)
    m = attentions.build("mhsa", dim=16, num_heads=2)
    x = torch.randn(2, 4, 4, 16)
    ref = m(x)
    out = m.to(dtype)(x.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=5e-2)


def test_gradients_reach_every_parameter():
    m = attentions.build("mhsa", dim=8, num_heads=2)
    m(torch.randn(1, 3, 3, 8)).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_finite_on_large_inputs():
    m = attentions.build("mhsa", dim=8, num_heads=2)
    assert torch.isfinite(m(torch.randn(1, 4, 4, 8) * 1e4)).all()


def test_wrong_channel_count_is_a_clear_error():
    m = attentions.build("mhsa", dim=8, num_heads=2)
    with pytest.raises(ValueError, match=r"expected x of shape \(B, H, W, C=8\)"):
        m(torch.randn(1, 8, 4, 4))


def test_official_layout_loads_and_mismatches_are_listed():
    sd = {"qkv.weight": torch.randn(192, 64), "qkv.bias": torch.randn(192),
          "proj.weight": torch.randn(64, 64), "proj.bias": torch.randn(64)}
    m = attentions.from_official("mhsa", sd, dim=64, num_heads=2)
    assert torch.equal(m.qkv.weight, sd["qkv.weight"])
    bad = dict(sd, **{"proj.weight": torch.randn(64, 32)})
    del bad["qkv.bias"]
    bad["extra.weight"] = torch.zeros(1)
    with pytest.raises(attentions.OfficialStateDictError) as e:
        attentions.from_official("mhsa", bad, dim=64, num_heads=2)
    assert e.value.missing == ["qkv.bias"] and e.value.unexpected == ["extra.weight"]
    assert "proj.weight: got (64, 32), expected (64, 64)" in str(e.value)


def test_cost_counts_projections_and_attention():
    c = attentions.build("mhsa", dim=64, num_heads=2).cost(14, 14)
    N = 196
    assert c.macs["projections"] == N * 64 * 192 + N * 64 * 64
    assert c.macs["attention"] == 2 * N * N * 64
    assert c.total == c.macs["projections"] + c.macs["attention"]
    assert c.keys_per_query == N
