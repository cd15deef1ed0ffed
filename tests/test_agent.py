"""agent: agent attention (Swin variant), against a float64 reference written from the spec (B.3).

The reference writes its own adaptive average pool, its own half-pixel bilinear resize, its own depthwise conv
and softmax; at sizes other than ``window_size`` it resizes the row/column biases with its own 1-D linear
interpolation, as documented in ``attentions/agent.py``.
"""
from __future__ import annotations

import logging
import math

import pytest
import torch

import attentions
from attentions.agent import resize_axis



def lerp_weights(n_in, n_out):
    """(n_out, n_in) matrix of half-pixel linear interpolation (align_corners=False, edges held)."""
    M = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        w = src - i0
        M[i, i0] += 1 - w
        M[i, i1] += w
    return M


def adaptive_pool(img, p):
    """img (B, C, H, W) -> (B, C, p, p) by PyTorch's adaptive windows [floor(iH/p), ceil((i+1)H/p))."""
    B, C, H, W = img.shape
    out = torch.zeros(B, C, p, p, dtype=img.dtype)
    for i in range(p):
        for j in range(p):
            h0, h1 = (i * H) // p, -((-(i + 1) * H) // p)
            w0, w1 = (j * W) // p, -((-(j + 1) * W) // p)
            out[:, :, i, j] = img[:, :, h0:h1, w0:w1].mean(dim=(2, 3))
    return out


def depthwise3x3(img, weight, bias):
    B, C, H, W = img.shape
    pad = torch.zeros(B, C, H + 2, W + 2, dtype=img.dtype)
    pad[:, :, 1:-1, 1:-1] = img
    out = bias.view(1, C, 1, 1).expand(B, C, H, W).clone()
    for dy in range(3):
        for dx in range(3):
            out += pad[:, :, dy:dy + H, dx:dx + W] * weight[:, 0, dy, dx].view(1, C, 1, 1)
    return out


def softmax(t):
    e = (t - t.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def naive_agent(mod, x, resize_rows_cols):
    """Spec B.3 for one window = the whole (H, W) map, float64, heads in a loop."""
    P = {k: v.double() for k, v in mod.state_dict().items()}
    B, H, W, C = x.shape
    m, n = mod.config.num_heads, mod.config.agent_num
    d, p, N = C // m, math.isqrt(n), H * W
    t = x.double().reshape(B, N, C)
    qkv = t @ P["qkv.weight"].T + P["qkv.bias"]
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    A = adaptive_pool(q.transpose(1, 2).reshape(B, C, H, W), p).reshape(B, C, n).transpose(1, 2)
    Mh, Mw = lerp_weights(7, H), lerp_weights(7, W)
    an = torch.einsum("yi,jnik,xk->jnyx", Mh, P["an_bias"], Mw)  # bilinear 7x7 -> HxW, half-pixel
    na = torch.einsum("yi,jnik,xk->jnyx", Mh, P["na_bias"], Mw)
    ah, aw = P["ah_bias"][0, :, :, :, 0], P["aw_bias"][0, :, :, 0]  # (m, n, Wh), (m, n, Ww)
    ha, wa = P["ha_bias"][0, :, :, 0], P["wa_bias"][0, :, 0]  # (m, Wh, n), (m, Ww, n)
    if resize_rows_cols:
        ah = torch.einsum("yi,jni->jny", lerp_weights(ah.shape[-1], H), ah)
        aw = torch.einsum("xi,jni->jnx", lerp_weights(aw.shape[-1], W), aw)
        ha = torch.einsum("yi,jin->jyn", lerp_weights(ha.shape[1], H), ha)
        wa = torch.einsum("xi,jin->jxn", lerp_weights(wa.shape[1], W), wa)
    out = torch.zeros(B, N, C, dtype=torch.float64)
    for j in range(m):
        sl = slice(j * d, (j + 1) * d)
        b1 = (an[j] + ah[j][:, :, None] + aw[j][:, None, :]).reshape(n, N)
        b2 = (na[j].reshape(n, N).T + (ha[j][:, None, :] + wa[j][None, :, :]).reshape(N, n))
        s1 = softmax(torch.einsum("bad,bkd->bak", A[..., sl], k[..., sl]) / math.sqrt(d) + b1)
        va = torch.einsum("bak,bkd->bad", s1, v[..., sl])
        s2 = softmax(torch.einsum("bqd,bad->bqa", q[..., sl], A[..., sl]) / math.sqrt(d) + b2)
        out[..., sl] = torch.einsum("bqa,bad->bqd", s2, va)
    dwc = depthwise3x3(v.transpose(1, 2).reshape(B, C, H, W), P["dwc.weight"], P["dwc.bias"])
    out = out + dwc.reshape(B, C, N).transpose(1, 2)
    return (out @ P["proj.weight"].T + P["proj.bias"]).reshape(B, H, W, C)


def build(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(dim=16, num_heads=2, agent_num=4, window_size=(6, 5))
    mod = attentions.build("agent", **{**cfg, **kw})
    with torch.no_grad():  # biases of order 1 so that a wrong bias layout shows
        for name, prm in mod.named_parameters():
            if name.endswith("_bias"):
                prm.normal_()
    return mod


@pytest.mark.parametrize("kw, B", [(dict(), 2), (dict(agent_num=9, window_size=7), 1), (dict(num_heads=4), 2),
                                   (dict(agent_num=1, window_size=(3, 8)), 1)])
def test_matches_naive_reference_at_window_size(kw, B):
    mod = build(**kw).double()
    H, W = mod.ah_bias.shape[3], mod.aw_bias.shape[4]
    x = torch.randn(B, H, W, 16, dtype=torch.float64)
    torch.testing.assert_close(mod(x), naive_agent(mod, x, resize_rows_cols=False), atol=1e-5, rtol=0)


@pytest.mark.parametrize("H, W", [(9, 11), (4, 3), (6, 8), (11, 5), (1, 2)])
def test_other_sizes_match_reference_with_interpolated_biases(H, W):
    mod = build().double()  # window (6, 5)
    x = torch.randn(2, H, W, 16, dtype=torch.float64)
    torch.testing.assert_close(mod(x), naive_agent(mod, x, resize_rows_cols=True), atol=1e-5, rtol=0)


def test_float32_matches_reference():
    mod = build(agent_num=9)
    x = torch.randn(2, 7, 10, 16)
    torch.testing.assert_close(mod(x).double(), naive_agent(mod, x, resize_rows_cols=True), atol=1e-5, rtol=0)


def test_resize_axis_is_identity_at_size_and_linear_otherwise():
    t = torch.randn(1, 2, 3, 5, 1)
    assert resize_axis(t, 3, 5) is t
    r = resize_axis(t, 3, 10)  # doubling: half-pixel centres give 0.75/0.25 blends, edges held
    assert r.shape == (1, 2, 3, 10, 1)
    torch.testing.assert_close(r[..., 0, 0], t[..., 0, 0])
    torch.testing.assert_close(r[..., 1, 0], 0.75 * t[..., 0, 0] + 0.25 * t[..., 1, 0])
    torch.testing.assert_close(r[..., 9, 0], t[..., 4, 0])
    ramp = torch.arange(4.0).view(1, 1, 1, 4, 1)  # a linear ramp is resampled at the half-pixel positions
    torch.testing.assert_close(resize_axis(ramp, 3, 8).flatten()[1:-1], torch.arange(1, 7) * 0.5 - 0.25)


@pytest.mark.parametrize("shape", [(1, 6, 5), (2, 6, 5), (2, 9, 4), (1, 1, 1), (2, 3, 7)])
def test_shapes(shape):
    y = build()(torch.randn(shape + (16,)))
    assert y.shape == shape + (16,) and torch.isfinite(y).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("size", [(6, 5), (8, 8)])
def test_low_precision_is_close_to_float32(dtype, size):
    mod = build()
    x = torch.randn((2,) + size + (16,))
    ref = mod(x)
    out = mod.to(dtype)(x.to(dtype))
    assert out.dtype == dtype and out.shape == ref.shape
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("size", [(6, 5), (7, 9)])
def test_gradients_reach_every_parameter(size):
    mod = build()
    (mod(torch.randn((2,) + size + (16,))) * torch.randn((2,) + size + (16,))).sum().backward()
    for name, p in mod.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_deterministic_and_finite_on_large_input():
    x = torch.randn(2, 6, 5, 16)
    a, b = build(seed=5), build(seed=5)
    torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)
    torch.testing.assert_close(a(x), a(x), atol=0, rtol=0)
    assert torch.isfinite(a(x * 1e4)).all()


def _official(C, m, n, w):
    return {"an_bias": (m, n, 7, 7), "na_bias": (m, n, 7, 7), "ah_bias": (1, m, n, w, 1), "aw_bias": (1, m, n, 1, w),
            "ha_bias": (1, m, w, 1, n), "wa_bias": (1, m, 1, w, n), "qkv.weight": (3 * C, C), "qkv.bias": (3 * C,),
            "proj.weight": (C, C), "proj.bias": (C,), "dwc.weight": (C, 1, 3, 3), "dwc.bias": (C,)}


OFFICIAL = {
    "Swin-T-stage1": (dict(dim=96, num_heads=3, agent_num=9, window_size=(56, 56)), _official(96, 3, 9, 56)),
    "Swin-T-stage2": (dict(dim=192, num_heads=6, agent_num=16, window_size=(28, 28)), _official(192, 6, 16, 28)),
}


def test_defaults_are_the_stage1_geometry():
    c = attentions.build("agent").config
    assert (c.dim, c.num_heads, c.agent_num, c.window_size) == (64, 2, 9, 56)


@pytest.mark.parametrize("kwargs, match", [
    (dict(agent_num=10), r"agent_num=10 is not allowed: expected a perfect square"),
    (dict(dim=30, num_heads=4), r"num_heads=4 is not allowed"),
    (dict(window_size=0), r"window_size=0"),
    (dict(agents=9), r"unknown parameter 'agents'"),
])
def test_config_errors_name_the_parameter(kwargs, match):
    with pytest.raises(attentions.ConfigError, match=match):
        attentions.build("agent", **kwargs)


def test_cost_matches_the_documented_fvcore_count():
    config, _ = OFFICIAL["Swin-T-stage1"]
    c = attentions.build("agent", **config).cost(56, 56)
    # spec B.5: fvcore on the official Swin-T stage-1 block: 130.13M MACs
    assert c.total == 130_131_456 and c.keys_per_query == 9
    assert c.macs["projections"] == 4 * 3136 * 96 * 96 and c.macs["lce"] == 9 * 3136 * 96


@pytest.mark.parametrize("H, W", [(6, 5), (9, 4)])
def test_cost_equals_fvcore_on_the_module(H, W):
    fvcore = pytest.importorskip("fvcore.nn")
    mod = build().eval()
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    flops = fvcore.FlopCountAnalysis(mod, torch.randn(1, H, W, 16))
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert flops.total() == mod.cost(H, W).total
