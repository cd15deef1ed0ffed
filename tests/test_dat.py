"""dat: DAT++ and DAT v1 deformable attention, against a float64 reference written from the spec (A.4).

The reference uses its own bilinear interpolation (no grid_sample) for both the key sampling and the RPE lookup,
its own LayerNorm and GELU, and derives the padding, grids and offset range from the spec's formulas.
"""
from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F

import attentions



def bilinear_ac(img, y, x):
    """Sample img (C, Hi, Wi) at normalised (y, x) (each (P,)): align_corners=True, zeros outside -> (C, P)."""
    C, Hi, Wi = img.shape
    fy, fx = (y + 1) / 2 * (Hi - 1), (x + 1) / 2 * (Wi - 1)
    y0, x0 = fy.floor(), fx.floor()
    out = torch.zeros(C, y.numel(), dtype=img.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            yi, xi = y0 + dy, x0 + dx
            w = (1 - (fy - yi).abs()) * (1 - (fx - xi).abs())
            ok = (yi >= 0) & (yi <= Hi - 1) & (xi >= 0) & (xi <= Wi - 1)
            vals = img[:, yi.clamp(0, Hi - 1).long(), xi.clamp(0, Wi - 1).long()]
            out += vals * (w * ok)
    return out


def axis(n, variant, keys):
    """Spec A.4 grids along one axis: keys = reference points, else query grid."""
    i = torch.arange(n, dtype=torch.float64)
    if variant == "v1":
        return (i + 0.5) / n * 2 - 1
    if n == 1:  # documented: a 1-wide axis sits at the centre
        return torch.zeros(1, dtype=torch.float64)
    return ((i + 0.5) if keys else i) / (n - 1) * 2 - 1


def naive_dat(mod, x):
    """Spec A.4 with explicit einsums and loops, float64. x (B, H, W, C) -> (B, H, W, C)."""
    cfg = mod.config
    P = {k: v.double() for k, v in mod.state_dict().items()}
    B, H, W, C = x.shape
    G, m, k, s, r = cfg.n_groups, cfg.num_heads, cfg.offset_kernel, cfg.stride, cfg.offset_range_factor
    hc, Cg, hg, v1 = C // m, C // G, m // G, cfg.variant == "v1"

    def conv1(name, t):  # a 1x1 conv with bias on (B, C, ...)
        bias = P[name + ".bias"].view(-1, *[1] * (t.dim() - 2))
        return torch.einsum("oc,bc...->bo...", P[name + ".weight"][:, :, 0, 0], t) + bias

    xc = x.double().permute(0, 3, 1, 2)
    q = conv1("proj_q", xc)
    pad = 0 if (not v1 and k == s) else k // 2
    t = F.conv2d(q.reshape(B * G, Cg, H, W), P["conv_offset.0.weight"], P["conv_offset.0.bias"], s, pad, groups=Cg)
    mu, var = t.mean(1, keepdim=True), t.var(1, unbiased=False, keepdim=True)
    gamma, beta = P["conv_offset.1.norm.weight"].view(-1, 1, 1), P["conv_offset.1.norm.bias"].view(-1, 1, 1)
    t = (t - mu) / torch.sqrt(var + 1e-5) * gamma + beta
    t = 0.5 * t * (1 + torch.erf(t / math.sqrt(2)))
    off = torch.einsum("oc,bchw->bhwo", P["conv_offset.3.weight"][:, :, 0, 0], t)  # (BG, Hk, Wk, 2)
    Hk, Wk = off.shape[1:3]
    if (r > 0) if v1 else (r >= 0):
        dh, dw = (Hk, Wk) if v1 else (max(Hk - 1, 1), max(Wk - 1, 1))
        off = off.tanh() * torch.tensor([r / dh, r / dw], dtype=torch.float64)
    ry, rx = axis(Hk, cfg.variant, True), axis(Wk, cfg.variant, True)
    ref = torch.stack(torch.meshgrid(ry, rx, indexing="ij"), -1)
    pos = ref + off
    if r < 0:
        pos = pos.tanh() if v1 else pos.clamp(-1, 1)
    pos = pos.reshape(B, G, Hk * Wk, 2)
    xg = xc.reshape(B, G, Cg, H, W)
    xs = torch.stack([torch.cat([bilinear_ac(xg[b, g], pos[b, g, :, 0], pos[b, g, :, 1]) for g in range(G)])
                      for b in range(B)])  # (B, C, Nk)
    kk, vv = conv1("proj_k", xs).reshape(B, m, hc, -1), conv1("proj_v", xs).reshape(B, m, hc, -1)
    logits = torch.einsum("bjcq,bjcn->bjqn", q.reshape(B, m, hc, H * W), kk) * hc**-0.5
    logits = logits + naive_rpe(P["rpe_table"], H, W, pos, cfg.variant, hg)
    out = torch.einsum("bjqn,bjcn->bjcq", logits.softmax(-1), vv).reshape(B, C, H, W)
    return conv1("proj_out", out).permute(0, 2, 3, 1)


def naive_rpe(table, H, W, pos, variant, hg):
    """Bias (B, m, HW, Nk): head j reads its table at (query - pos of group j // hg) / 2."""
    qy, qx = axis(H, variant, False), axis(W, variant, False)
    qgrid = torch.stack(torch.meshgrid(qy, qx, indexing="ij"), -1).reshape(H * W, 1, 2)
    B, m, Nk = pos.shape[0], table.shape[0], pos.shape[2]
    bias = torch.zeros(B, m, H * W, Nk, dtype=torch.float64)
    for b in range(B):
        for j in range(m):
            disp = ((qgrid - pos[b, j // hg][None]) * 0.5).reshape(-1, 2)
            bias[b, j] = bilinear_ac(table[j][None], disp[:, 0], disp[:, 1])[0].reshape(H * W, Nk)
    return bias


TINY = dict(dim=16, num_heads=4)
CONFIGS = {
    "pp": dict(TINY, n_groups=2, stride=2, offset_kernel=3, rpe_size=7),
    "pp-k=s": dict(TINY, n_groups=1, stride=3, offset_kernel=3, rpe_size=9),
    "pp-orf": dict(TINY, n_groups=2, stride=2, offset_kernel=5, offset_range_factor=0.7, rpe_size=7),
    "pp-orf0": dict(TINY, n_groups=4, stride=1, offset_kernel=3, offset_range_factor=0.0, rpe_size=5),
    "v1": dict(TINY, variant="v1", n_groups=2, stride=1, offset_kernel=3, offset_range_factor=2.0, rpe_size=7),
    "v1-s2": dict(TINY, variant="v1", n_groups=2, stride=2, offset_kernel=3, offset_range_factor=2.0, rpe_size=4),
    "v1-tanh": dict(TINY, variant="v1", n_groups=1, stride=2, offset_kernel=3, offset_range_factor=-1.0),
    "v1-orf0": dict(TINY, variant="v1", n_groups=1, stride=2, offset_kernel=5, offset_range_factor=0.0),
}


def build(name, seed=0):
    torch.manual_seed(seed)
    mod = attentions.build("dat", **CONFIGS[name])
    with torch.no_grad():  # offsets of a few key cells, so clamping, tanh and zero padding all matter
        mod.conv_offset[3].weight.mul_(8.0)
        mod.rpe_table.normal_()
    return mod


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("shape", [(2, 7, 7), (1, 6, 9)])
def test_matches_naive_reference(name, shape):
    mod = build(name).double()
    x = torch.randn(shape + (16,), dtype=torch.float64)
    torch.testing.assert_close(mod(x), naive_dat(mod, x), atol=1e-5, rtol=0)


def test_float32_matches_reference_with_table_of_other_size():
    mod = build("v1")  # rpe_size 7, input 5x8: the table is read in normalised coordinates
    x = torch.randn(2, 5, 8, 16)
    torch.testing.assert_close(mod(x).double(), naive_dat(mod, x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", ["pp", "v1"])
@pytest.mark.parametrize("orf", [-1.0, 2.0])
def test_zero_offsets_sample_exactly_the_reference_grid(variant, orf):
    torch.manual_seed(0)
    mod = attentions.build("dat", dim=8, num_heads=2, n_groups=2, variant=variant, stride=8, offset_kernel=9,
                           offset_range_factor=orf, rpe_size=56).double()
    with torch.no_grad():
        mod.conv_offset[3].weight.zero_()
    seen = []
    mod.proj_k.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0]))
    x = torch.randn(2, 56, 56, 8, dtype=torch.float64)
    mod(x)
    i = torch.arange(7, dtype=torch.float64)
    ref = (i + 0.5) / 6 * 2 - 1 if variant == "pp" else (i + 0.5) / 7 * 2 - 1
    if variant == "pp":  # the documented half-cell shift: the grid spans [-0.833, 1.167]
        assert ref[0].item() == pytest.approx(-5 / 6) and ref[-1].item() == pytest.approx(7 / 6)
    expected_pos = ref.clamp(-1, 1) if (variant == "pp" and orf < 0) else ref
    if variant == "v1" and orf < 0:
        expected_pos = ref.tanh()
    pos, got_ref = mod.sample_positions(x)
    assert pos.shape == (2, 2, 7, 7, 2)
    torch.testing.assert_close(got_ref[0, 0, :, 0, 0], ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(pos[1, 1, :, 3, 0], expected_pos, atol=1e-12, rtol=0)
    torch.testing.assert_close(pos[0, 0, 2, :, 1], expected_pos, atol=1e-12, rtol=0)
    yy, xx = torch.meshgrid(expected_pos, expected_pos, indexing="ij")
    xg = x.permute(0, 3, 1, 2).reshape(2, 2, 4, 56, 56)
    want = torch.stack([torch.cat([bilinear_ac(xg[b, g], yy.flatten(), xx.flatten()) for g in range(2)])
                        for b in range(2)])
    torch.testing.assert_close(seen[0].reshape(2, 8, 49), want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["pp", "v1"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 7, 5), (2, 13, 11), (1, 1, 1)])
def test_shapes(name, shape):
    mod = build(name)
    y = mod(torch.randn(shape + (16,)))
    assert y.shape == shape + (16,) and torch.isfinite(y).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["pp", "v1"])
def test_low_precision_is_close_to_float32(name, dtype):
    mod = build(name)
    with torch.no_grad():
        mod.conv_offset[3].weight.div_(8.0)  # keep positions off the clamp edge, where rounding flips sides
    x = torch.randn(2, 7, 9, 16)
    ref = mod(x)
    out = mod.to(dtype)(x.to(dtype))
    assert out.dtype == dtype and out.shape == ref.shape
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("name", ["pp", "v1"])
def test_gradients_reach_every_parameter(name):
    mod = build(name)
    x = torch.randn(2, 7, 7, 16, requires_grad=True)
    (mod(x) * torch.randn(2, 7, 7, 16)).sum().backward()
    for pname, p in mod.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    assert x.grad.abs().sum() > 0


def test_deterministic_and_finite_on_large_input():
    x = torch.randn(2, 8, 8, 16)
    a, b = build("pp", seed=3), build("pp", seed=3)
    torch.testing.assert_close(a(x), b(x), atol=0, rtol=0)
    torch.testing.assert_close(a(x), a(x), atol=0, rtol=0)
    assert torch.isfinite(a(x * 1e4)).all() and torch.isfinite(build("v1")(x * 1e4)).all()


def test_too_small_input_names_the_size():
    mod = attentions.build("dat", dim=8, num_heads=2, stride=3, offset_kernel=3)  # DAT++: k == s -> no padding
    with pytest.raises(ValueError, match=r"H=2, W=5 too small .* H, W >= 3"):
        mod(torch.randn(1, 2, 5, 8))


# official layouts (shared/design/official-state-dicts.md): config -> {key: shape}
def _official(C, m, Cg, k, t):
    sd = {"rpe_table": (m, 2 * t - 1, 2 * t - 1), "conv_offset.0.weight": (Cg, 1, k, k), "conv_offset.0.bias": (Cg,),
          "conv_offset.1.norm.weight": (Cg,), "conv_offset.1.norm.bias": (Cg,), "conv_offset.3.weight": (2, Cg, 1, 1)}
    for p in ("q", "k", "v", "out"):
        sd[f"proj_{p}.weight"], sd[f"proj_{p}.bias"] = (C, C, 1, 1), (C,)
    return sd


OFFICIAL = {
    "pp-T-stage1": (dict(dim=64, num_heads=2, variant="pp", n_groups=1, stride=8, offset_kernel=9,
                         offset_range_factor=-1.0, rpe_size=56), _official(64, 2, 64, 9, 56)),
    "pp-T-stage3": (dict(dim=256, num_heads=8, variant="pp", n_groups=4, stride=2, offset_kernel=5,
                         offset_range_factor=-1.0, rpe_size=14), _official(256, 8, 64, 5, 14)),
    "v1-T-stage3": (dict(dim=384, num_heads=12, variant="v1", n_groups=3, stride=1, offset_kernel=5,
                         offset_range_factor=2.0, rpe_size=14), _official(384, 12, 128, 5, 14)),
}


@pytest.mark.parametrize("kwargs, param", [
    (dict(num_heads=4, n_groups=3, dim=24), "n_groups=3"),
    (dict(offset_kernel=4), "offset_kernel=4"),
    (dict(stride=0), "stride=0"),
    (dict(variant="v2"), "variant='v2'"),
    (dict(rpe_size=(7, 0)), "rpe_size=(7, 0)"),
    (dict(n_group=2), "unknown parameter 'n_group'"),
])
def test_config_errors_name_the_parameter(kwargs, param):
    with pytest.raises(attentions.ConfigError, match=param.replace("(", r"\(").replace(")", r"\)")):
        attentions.build("dat", **kwargs)


def test_cost_matches_the_documented_fvcore_count():
    config, _ = OFFICIAL["v1-T-stage3"]
    c = attentions.build("dat", **config).cost(14, 14)
    # spec A.9: fvcore on the official v1 DAT-T stage-3 block: conv 117.64M + einsum 29.50M + grid 2.15M + LN 0.38M
    assert c.total == 149_662_464 and c.keys_per_query == 196
    assert c.macs["attention"] == 2 * 196 * 196 * 384
    assert c.macs["offsets_sampling_rpe"] == 196 * 384 * 25 + 2 * 196 * 384 + 5 * 196 * 384 + 2_145_024


@pytest.mark.parametrize("name, H, W", [("pp", 9, 7), ("v1-s2", 6, 5), ("pp-k=s", 7, 10)])
def test_cost_equals_fvcore_on_the_module(name, H, W):
    fvcore = pytest.importorskip("fvcore.nn")
    mod = build(name).eval()
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    flops = fvcore.FlopCountAnalysis(mod, torch.randn(1, H, W, 16))
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert flops.total() == mod.cost(H, W).total
