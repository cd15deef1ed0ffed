"""dbra: DeBiFormer's deformable bi-level routing attention.

Pinned by an independent float64 reference written here from the spec's pseudo-code (shared/design/
dbra-debiformer.md §3.2: explicit loops, einsum and a hand-written bilinear sampler, no grid_sample), by each step
on hand-made inputs, and by the official parameter tables (official-state-dicts.md).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attentions
import attentions.dbra as dbra_mod
from attentions import deformable
from attentions import ConfigError, OfficialStateDictError

# -- the reference --------------------------------------------------------------------------------------------------


def bilinear(img, pts):
    """img (N, C, H, W), pts (N, P, 2) as normalised (y, x) -> (N, C, P); align_corners=True, zeros outside."""
    N, C, H, W = img.shape
    fy, fx = (pts[..., 0] + 1) / 2 * (H - 1), (pts[..., 1] + 1) / 2 * (W - 1)
    y0, x0 = fy.floor(), fx.floor()
    flat, out = img.reshape(N, C, H * W), 0
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            w = (fy - y0 if dy else 1 - (fy - y0)) * (fx - x0 if dx else 1 - (fx - x0))
            inside = (yy >= 0) & (yy <= H - 1) & (xx >= 0) & (xx <= W - 1)
            ind = (yy.clamp(0, H - 1) * W + xx.clamp(0, W - 1)).long()
            out = out + flat.gather(2, ind[:, None, :].expand(N, C, -1)) * (w * inside)[:, None, :]
    return out


def conv1x1(t, w, b=None):
    out = torch.einsum("bchw,oc->bohw", t, w[:, :, 0, 0])
    return out if b is None else out + b[None, :, None, None]


def dwconv(t, w, b, stride):
    """Depthwise conv by explicit kernel taps, zero padding k // 2."""
    k = w.shape[-1]
    N, C, H, W = t.shape
    Ho, Wo = (H + 2 * (k // 2) - k) // stride + 1, (W + 2 * (k // 2) - k) // stride + 1
    tp, out = F.pad(t, (k // 2,) * 4), 0
    for u in range(k):
        for v in range(k):
            tap = tp[:, :, u : u + stride * (Ho - 1) + 1 : stride, v : v + stride * (Wo - 1) + 1 : stride]
            out = out + w[None, :, 0, u, v, None, None] * tap
    return out if b is None else out + b[None, :, None, None]


def layernorm_c(t, w, b, eps):
    mu = t.mean(1, keepdim=True)
    var = ((t - mu) ** 2).mean(1, keepdim=True)
    return (t - mu) / torch.sqrt(var + eps) * w[None, :, None, None] + b[None, :, None, None]


def gelu(t):
    return 0.5 * t * (1 + torch.erf(t / math.sqrt(2)))


def pad_to(t, n, dims):
    """Zero-pad the given dims of t at the end to multiples of n."""
    pads = [0, 0] * t.dim()
    for d in dims:
        pads[2 * (t.dim() - 1 - d) + 1] = -t.shape[d] % n
    return F.pad(t, pads)


def regions(t, n):
    """(B, C, H, W) -> list over regions r = ri·n + rj of (B, tokens, C)."""
    B, C, H, W = t.shape
    h, w = H // n, W // n
    return [t[:, :, i * h : (i + 1) * h, j * w : (j + 1) * w].reshape(B, C, -1).transpose(1, 2)
            for i in range(n) for j in range(n)]


def naive_dbra(x, sd, c):
    """DBRA forward from the spec, float64. x (B, H, W, C); sd: the module's state dict; c: its config."""
    sd = {k: v.double() for k, v in sd.items()}
    x = x.double()
    n, s, G, m = c.n_win, c.offset_stride, c.n_groups, c.num_heads
    B, H0, W0, C = x.shape
    if c.auto_pad:
        x = pad_to(x, n, (1, 2))
    H, W = x.shape[1:3]
    xc = x.permute(0, 3, 1, 2)
    q, k, v = conv1x1(xc, sd["qkv_conv.qkv.weight"], sd["qkv_conv.qkv.bias"]).split(C, dim=1)
    # offsets -> positions -> agents sampled from the input
    t = dwconv(q.reshape(B * G, C // G, H, W), sd["conv_offset_q.0.weight"], None, s)
    t = gelu(layernorm_c(t, sd["conv_offset_q.1.norm.weight"], sd["conv_offset_q.1.norm.bias"], 1e-5))
    off = conv1x1(t, sd["conv_offset_q.3.weight"])  # (BG, 1 or 2, Hk, Wk)
    Hk, Wk = off.shape[-2:]
    ref_y = torch.tensor([(i + 0.5) / Hk * 2 - 1 for i in range(Hk)], dtype=x.dtype)
    ref_x = torch.tensor([(j + 0.5) / Wk * 2 - 1 for j in range(Wk)], dtype=x.dtype)
    pos = torch.stack([ref_y[:, None] + off[:, 0], ref_x[None, :] + off[:, -1]], dim=-1).clamp(-1, 1)
    a0 = bilinear(xc.reshape(B * G, C // G, H, W), pos.reshape(B * G, -1, 2)).reshape(B, C, Hk, Wk)
    lce = dwconv(v, sd["lepe1.weight"], sd["lepe1.bias"], s) if c.lce_kernel else torch.zeros_like(a0)
    if c.auto_pad:
        a0, lce, pos = pad_to(a0, n, (2, 3)), pad_to(lce, n, (2, 3)), pad_to(pos, n, (1, 2))
    Hg, Wg = a0.shape[-2:]
    # agent-level routed attention
    scale, d = C**-0.5, C // m
    qa = conv1x1(a0, sd["proj_q.weight"], sd["proj_q.bias"])
    qr, kr, vr = regions(qa, n), regions(k, n), regions(v, n)
    q_mean = torch.stack([t.mean(1) for t in qr], 1)  # (B, P, C) region descriptors
    k_mean = torch.stack([t.mean(1) for t in kr], 1)
    logits = torch.einsum("bic,bjc->bij", q_mean, k_mean) * scale  # (B, P, P)
    idx = logits.topk(c.topk, dim=-1).indices
    oa = torch.zeros_like(qa)
    ha, wa = Hg // n, Wg // n
    for b in range(B):
        for r in range(n * n):
            keys = torch.cat([kr[j][b] for j in idx[b, r].tolist()])
            vals = torch.cat([vr[j][b] for j in idx[b, r].tolist()])
            outs = [torch.softmax(qr[r][b][:, h * d:(h + 1) * d] @ keys[:, h * d:(h + 1) * d].T * scale, -1)
                    @ vals[:, h * d:(h + 1) * d] for h in range(m)]
            ri, rj = divmod(r, n)
            oa[b, :, ri * ha:(ri + 1) * ha, rj * wa:(rj + 1) * wa] = torch.cat(outs, -1).T.reshape(C, ha, wa)
    # refinement
    a1 = a0 + conv1x1(oa + lce, sd["unifyheads1.weight"], sd["unifyheads1.bias"])
    t = conv1x1(layernorm_c(a1, sd["norm2.weight"], sd["norm2.bias"], 1e-6),
                sd["mlp.linear1.0.weight"], sd["mlp.linear1.0.bias"])
    t = gelu(t + dwconv(t, sd["mlp.dwc.weight"], sd["mlp.dwc.bias"], 1))
    a2 = a1 + conv1x1(t, sd["mlp.linear2.0.weight"], sd["mlp.linear2.0.bias"])
    a3 = layernorm_c(a2, sd["norm.weight"], sd["norm.bias"], 1e-6)
    # back attention: pixels (q from qkv_conv) -> all agents, with the RPE-table bias
    Ns = Hg * Wg
    ka = conv1x1(a3, sd["proj_k.weight"], sd["proj_k.bias"]).reshape(B, C, Ns)
    va = conv1x1(a3, sd["proj_v.weight"], sd["proj_v.bias"]).reshape(B, C, Ns)
    qy = torch.tensor([i / (H - 1) * 2 - 1 for i in range(H)], dtype=x.dtype)
    qx = torch.tensor([j / (W - 1) * 2 - 1 for j in range(W)], dtype=x.dtype)
    qgrid = torch.stack(torch.meshgrid(qy, qx, indexing="ij"), -1).reshape(H * W, 1, 2)
    qp = q.reshape(B, C, H * W)
    out = torch.zeros(B, C, H * W, dtype=x.dtype)
    for b in range(B):
        for h in range(m):
            g = h // (m // G)
            disp = 0.5 * (qgrid - pos[b * G + g].reshape(1, Ns, 2))  # (HW, Ns, 2)
            bias = bilinear(sd["rpe_table"][h][None, None], disp.reshape(1, -1, 2)).reshape(H * W, Ns)
            sl = slice(h * d, (h + 1) * d)
            attn = torch.softmax(torch.einsum("cp,cs->ps", qp[b, sl], ka[b, sl]) * scale + bias, -1)
            out[b, sl] = torch.einsum("ps,cs->cp", attn, va[b, sl])
    y = conv1x1(out.reshape(B, C, H, W), sd["proj_out.weight"], sd["proj_out.bias"]).permute(0, 2, 3, 1)
    return y[:, :H0, :W0]


# -- configurations -------------------------------------------------------------------------------------------------

SMALL = dict(dim=32, num_heads=2, n_win=7, topk=4, offset_kernel=3, offset_stride=2, rpe_size=14)  # 14×14 -> 7×7
CASES = {
    "n_win7": (SMALL, (2, 14, 14)),
    "n_win7_groups2_offsets2": (dict(SMALL, n_groups=2, offset_channels=2, ffn_ratio=1.5), (1, 14, 14)),
    "n_win2_groups2": (dict(SMALL, n_win=2, topk=2, n_groups=2, rpe_size=8, lce_kernel=3), (2, 8, 8)),
    "auto_pad_offsets1": (dict(SMALL, n_win=2, topk=3, n_groups=2, offset_kernel=5, rpe_size=(6, 10),
                               auto_pad=True), (2, 7, 9)),
    "auto_pad_offsets2": (dict(SMALL, n_win=2, topk=2, offset_channels=2, rpe_size=5, lce_kernel=0,
                               auto_pad=True), (1, 5, 6)),
}


def build(seed=0, **cfg):
    torch.manual_seed(seed)
    return attentions.build("dbra", **cfg)


@pytest.mark.parametrize("case", list(CASES))
def test_matches_naive_reference(case):
    cfg, (B, H, W) = CASES[case]
    m = build(impl="torch", **cfg)
    x = torch.randn(B, H, W, cfg["dim"])
    ref = naive_dbra(x, m.state_dict(), m.config)
    torch.testing.assert_close(m(x).double(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["n_win7_groups2_offsets2", "auto_pad_offsets1"])
def test_gradients_match_reference_with_constant_routing(monkeypatch, case):
    """float64 gradients of input and every parameter equal the reference's, in which routing is a constant.

    The lean back attention runs in chunks of about 13 pixels here (its default would take all pixels at once).
    """
    monkeypatch.setattr(deformable, "_PIXEL_CHUNK_ELEMENTS", 3800)  # B·Ns·(m + 2G) = 294 and 288 per pixel
    cfg, (B, H, W) = CASES[case]
    m = build(impl="torch", **cfg).double()
    x = torch.randn(B, H, W, cfg["dim"], dtype=torch.float64, requires_grad=True)
    g = torch.randn(B, H, W, cfg["dim"], dtype=torch.float64)
    (m(x) * g).sum().backward()
    sd = {k: p.detach().clone().requires_grad_(True) for k, p in m.named_parameters()}
    x2 = x.detach().clone().requires_grad_(True)
    (naive_dbra(x2, sd, m.config) * g).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-9, rtol=0)
    for k, p in m.named_parameters():
        torch.testing.assert_close(p.grad, sd[k].grad, atol=1e-9, rtol=0, msg=k)


# -- shapes, dtypes, gradients, determinism --------------------------------------------------------------------------


@pytest.mark.parametrize("cfg,shape", [
    (SMALL, (1, 14, 14)), (SMALL, (2, 28, 14)), (dict(SMALL, offset_stride=1), (2, 7, 7)),
    (dict(SMALL, auto_pad=True), (2, 10, 17)), (dict(SMALL, auto_pad=True), (1, 1, 3)),
    (dict(SMALL, n_win=2, topk=1, auto_pad=True), (2, 5, 3)),
])
def test_output_shape(cfg, shape):
    m = build(**cfg)
    x = torch.randn(*shape, cfg["dim"])
    assert m(x).shape == x.shape


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_is_close_to_float32(dtype):
    cfg = dict(SMALL, n_win=2, topk=4, auto_pad=True)  # topk = n_win²: no routing decision to flip
    m = build(**cfg)
    x = torch.randn(2, 8, 6, 32)
    ref = m(x)
    out = m.to(dtype)(x.to(dtype))
    assert out.dtype == dtype and out.shape == x.shape
    torch.testing.assert_close(out.float(), ref, atol=6e-2, rtol=6e-2)


def test_gradients_reach_every_parameter():
    m = build(**dict(SMALL, n_groups=2, offset_channels=2))
    m(torch.randn(2, 14, 14, 32)).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_same_seed_same_output_and_repeatable():
    x = torch.randn(2, 14, 14, 32)
    a, b = build(seed=3, **SMALL), build(seed=3, **SMALL)
    for (ka, pa), (kb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(pa, pb)
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), a(x))
    assert not torch.equal(a(x), build(seed=4, **SMALL)(x))


def test_finite_on_large_inputs():
    m = build(**dict(SMALL, auto_pad=True))
    assert torch.isfinite(m(torch.randn(1, 12, 15, 32) * 1e4)).all()


@pytest.mark.parametrize("cfg,pixels_per_chunk", [
    (SMALL, None),  # 196 pixels: one chunk
    (SMALL, 30),  # 7 chunks, the last of 16 pixels
    (dict(SMALL, n_groups=2, offset_channels=2), 45),
])
def test_official_equals_lean_torch_outputs_and_grads(monkeypatch, cfg, pixels_per_chunk):
    """impl="official" (expanded gather, materialised back attention) vs impl="torch" (both lean paths)."""
    if pixels_per_chunk is not None:  # the chunk budget that gives this many pixels per chunk at B=2, Ns=49
        per_pixel = 2 * 49 * (cfg["num_heads"] + 2 * cfg.get("n_groups", 1))
        monkeypatch.setattr(deformable, "_PIXEL_CHUNK_ELEMENTS", per_pixel * pixels_per_chunk)
    gen = torch.Generator().manual_seed(0)  # not the global RNG: the inputs must not depend on test order
    x = torch.randn(2, 14, 14, 32, generator=gen).requires_grad_()
    g = torch.randn(2, 14, 14, 32, generator=gen)
    results = []
    for impl in ("official", "torch"):
        m = build(impl=impl, **cfg)
        x.grad = None
        y = m(x)
        (y * g).sum().backward()
        results.append((y.detach(), x.grad.clone(), {k: p.grad for k, p in m.named_parameters()}))
    (y0, gx0, gp0), (y1, gx1, gp1) = results
    torch.testing.assert_close(y0, y1, atol=1e-6, rtol=0)
    # float32 sums over pixels in another order (chunks): equal to 1e-6 of each gradient's largest magnitude
    torch.testing.assert_close(gx0, gx1, atol=1e-6 * gx0.abs().max().item(), rtol=0)
    for k in gp0:
        # proj_k's bias shifts each pixel's logits by one constant, which softmax ignores: its exact gradient is
        # 0 and both computed ones are rounding noise, so it is judged on the scale of proj_k's weight gradient.
        # Parameter gradients sum over every pixel, in chunks on one side: over 150 random inputs the largest
        # difference was 1.07e-6 of the largest gradient (a wrong gradient is off by O(1)), hence 4e-6.
        scale = gp0["proj_k.weight" if k == "proj_k.bias" else k].abs().max().item()
        torch.testing.assert_close(gp0[k], gp1[k], atol=4e-6 * scale, rtol=0, msg=k)


def test_impls_run_their_own_back_attention(monkeypatch):
    """"torch" runs the lean back attention and never the materialised one; "official" the reverse."""
    x = torch.randn(1, 14, 14, 32)

    def refuse(name):
        def fn(*args, **kwargs):
            raise AssertionError(f"{name} called")
        return fn

    lean_fn, ref_fn = dbra_mod.pixel_to_agent_attention_lean, dbra_mod.pixel_to_agent_attention_torch
    monkeypatch.setattr(dbra_mod, "pixel_to_agent_attention_torch", refuse("materialised"))
    build(impl="torch", **SMALL)(x)
    monkeypatch.setattr(dbra_mod, "pixel_to_agent_attention_torch", ref_fn)
    monkeypatch.setattr(dbra_mod, "pixel_to_agent_attention_lean", refuse("lean"))
    build(impl="official", **SMALL)(x)
    assert lean_fn is deformable.pixel_to_agent_attention_lean


def test_impl_resolution_on_cpu():
    x = torch.randn(1, 14, 14, 32)
    assert build(**SMALL)._impls(x) == ("torch", "torch")  # auto on CPU
    assert build(impl="official", **SMALL)._impls(x) == ("official", "official")
    assert build(impl="triton", **SMALL)._impls(x) == ("triton", "triton")


# -- the lean back attention against the materialised one ------------------------------------------------------------

LEAN_CASES = {  # B, m, G, H, W, Ns, d, pixels per chunk
    "chunks_of_8_last_3": (2, 2, 1, 5, 7, 6, 4, 8),
    "groups2_chunks_of_5_last_4": (1, 4, 2, 4, 6, 9, 3, 5),
    "one_pixel_chunks": (2, 2, 2, 3, 3, 4, 2, 1),
    "one_chunk": (1, 2, 1, 4, 4, 5, 4, None),
}


def lean_inputs(B, m, G, H, W, Ns, d, dtype):
    """Random q, k, v, positions and table; two agents sit on corners so displacements reach ±1 (table edges)."""
    q, k, v = (torch.randn(B * m, n, d, dtype=dtype) for n in (H * W, Ns, Ns))
    pos = torch.rand(B * G, Ns, 2, dtype=dtype) * 2 - 1
    pos[:, 0], pos[:, 1] = torch.tensor([-1.0, 1.0], dtype=dtype), torch.tensor([1.0, 1.0], dtype=dtype)
    table = torch.randn(m, 2 * H - 1, 2 * W + 1, dtype=dtype)
    return [t.requires_grad_() for t in (q, k, v, pos, table)]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("case", list(LEAN_CASES))
def test_lean_back_attention_matches_materialised(case, dtype, tol):
    B, m, G, H, W, Ns, d, chunk = LEAN_CASES[case]
    inputs = lean_inputs(B, m, G, H, W, Ns, d, dtype)
    g = torch.randn(B * m, H * W, d, dtype=dtype)
    ref = deformable.pixel_to_agent_attention_torch(*inputs, G, H, W, 0.7)
    ref_grads = torch.autograd.grad((ref * g).sum(), inputs)
    out = deformable.pixel_to_agent_attention_lean(*inputs, G, H, W, 0.7, chunk_pixels=chunk)
    grads = torch.autograd.grad((out * g).sum(), inputs)
    torch.testing.assert_close(out, ref, atol=tol, rtol=0)
    for name, a, b in zip(("q", "k", "v", "pos", "rpe_table"), grads, ref_grads):
        assert b.abs().max() > 0, name  # every input gets a gradient in the reference
        torch.testing.assert_close(a, b, atol=tol * b.abs().max().item(), rtol=0, msg=name)


def test_lean_back_attention_strided_heads_and_partial_grads():
    """q as a (B, m, N, d) view of a (B, C, H, W) map, only some inputs needing gradients. dq has q's layout
    (no copy into the map's gradient) and the output is a view of channels-last (B, N, m·d) memory."""
    B, m, G, H, W, Ns, d = 2, 2, 1, 4, 5, 6, 3
    q, k, v, pos, table = lean_inputs(B, m, G, H, W, Ns, d, torch.float64)
    qmap = torch.randn(B, 3 * m * d, H, W, dtype=torch.float64)[:, m * d:2 * m * d].requires_grad_()  # a slice
    q4 = qmap.view(B, m, d, H * W).transpose(-1, -2)
    k4, v4 = k.detach().view(B, m, Ns, d), v.detach().view(B, m, Ns, d)  # no gradient wanted for k, v
    out = deformable.pixel_to_agent_attention_lean(q4, k4, v4, pos, table.detach(), G, H, W, 0.5, chunk_pixels=7)
    assert out.shape == (B, m, H * W, d) and out.transpose(1, 2).is_contiguous()
    g = torch.randn(B, m, H * W, d, dtype=torch.float64)
    dq, dpos = torch.autograd.grad((out * g).sum(), (q4, pos))
    assert dq.transpose(-1, -2).is_contiguous()
    q3 = q4.detach().reshape(B * m, H * W, d).requires_grad_()
    pos3 = pos.detach().clone().requires_grad_()
    ref = deformable.pixel_to_agent_attention_torch(q3, k4.reshape(B * m, Ns, d), v4.reshape(B * m, Ns, d), pos3,
                                                    table.detach(), G, H, W, 0.5)
    rq, rpos = torch.autograd.grad((ref * g.reshape(B * m, H * W, d)).sum(), (q3, pos3))
    torch.testing.assert_close(out.reshape(B * m, H * W, d), ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(dq.reshape(B * m, H * W, d), rq, atol=1e-12, rtol=0)
    torch.testing.assert_close(dpos, rpos, atol=1e-12, rtol=0)


def cpu_peak_bytes(fn):
    """Most bytes held at once by CPU-allocator tensors while fn() runs (profiler allocation events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    held = peak = 0
    for _, n in events:
        held += n
        peak = max(peak, held)
    return peak


def test_lean_back_attention_never_holds_a_whole_logit_tensor():
    B, m, G, H, W, Ns, d = 2, 2, 1, 32, 32, 49, 2
    inputs = lean_inputs(B, m, G, H, W, Ns, d, torch.float32)
    logits_bytes = B * m * H * W * Ns * 4  # 784 KiB; q, out and dq are 32 KiB each

    def step(fn, **kw):
        def run():
            torch.autograd.grad(fn(*inputs, G, H, W, 0.5, **kw).sum(), inputs)
        return run

    lean = cpu_peak_bytes(step(deformable.pixel_to_agent_attention_lean, chunk_pixels=64))
    ref = cpu_peak_bytes(step(deformable.pixel_to_agent_attention_torch))
    assert ref > 3 * logits_bytes  # logits, bias, softmax and 2 displacement-sized tensors are kept
    assert lean < logits_bytes / 2, (lean, ref)


# -- DBRA's steps on hand-made cases ---------------------------------------------------------------------------------


class ConstOffset(nn.Module):
    """Stands in for conv_offset_q: the same offset (per channel) at every point of a stride-2 grid."""

    def __init__(self, values):
        super().__init__()
        self.values = torch.tensor(values)

    def forward(self, q):
        N, _, H, W = q.shape
        return self.values.view(1, -1, 1, 1).expand(N, -1, (H - 1) // 2 + 1, (W - 1) // 2 + 1).clone()


def test_reference_points_are_pixel_centres_of_the_agent_grid():
    m = build(**dict(SMALL, n_win=2, topk=1))
    nn.init.zeros_(m.conv_offset_q[3].weight)  # zero offsets: positions are the reference points
    pos = m.agent_positions(torch.randn(2, 32, 8, 6))  # Hk = 4, Wk = 3
    assert pos.shape == (2, 4, 3, 2)
    torch.testing.assert_close(pos[0, :, 0, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    torch.testing.assert_close(pos[1, 0, :, 1], torch.tensor([-2 / 3, 0.0, 2 / 3]))


@pytest.mark.parametrize("channels,offset,expected_shift", [
    (1, [0.1], (0.1, 0.1)), (2, [0.1, -0.2], (0.1, -0.2)), (1, [0.5], None),
])
def test_offsets_broadcast_and_clamp(channels, offset, expected_shift):
    m = build(**dict(SMALL, n_win=2, topk=1, offset_channels=channels))
    m.conv_offset_q = ConstOffset(offset)
    pos = m.agent_positions(torch.zeros(1, 32, 8, 8))  # 4×4 grid at -0.75, -0.25, 0.25, 0.75
    ref = torch.tensor([-0.75, -0.25, 0.25, 0.75])
    if expected_shift is None:  # one channel of 0.5 moves (0.75, 0.75) to (1.25, 1.25): clamped to the corner
        assert pos[0, 3, 3].tolist() == [1.0, 1.0] and pos[0, 0, 0].tolist() == [-0.25, -0.25]
        return
    torch.testing.assert_close(pos[0, :, 0, 0], ref + expected_shift[0])
    torch.testing.assert_close(pos[0, 0, :, 1], ref + expected_shift[1])


def test_one_channel_offsets_of_trained_weights_move_along_the_diagonal():
    m = build(**dict(SMALL, n_win=2, topk=1))
    m.conv_offset_q[3].weight.data.mul_(0.05)  # keep points away from the clamp
    pos = m.agent_positions(torch.randn(2, 32, 8, 8))
    r = torch.tensor([-0.75, -0.25, 0.25, 0.75])
    shift = pos - torch.stack(torch.meshgrid(r, r, indexing="ij"), -1)
    assert shift.abs().max() > 1e-3
    torch.testing.assert_close(shift[..., 0], shift[..., 1])


def test_agents_sample_the_input_pixel_at_their_position():
    m = build(dim=4, num_heads=2, n_groups=2, n_win=1, topk=1)
    x = torch.randn(2, 4, 5, 5)
    pix = torch.tensor([[(1, 3), (4, 0)], [(0, 0), (2, 2)], [(3, 1), (1, 1)], [(4, 4), (0, 2)]])  # (B·G, 2 agents)
    pos = (pix.float() / 4 * 2 - 1).view(4, 1, 2, 2)  # pixel i sits at i / (H - 1) · 2 - 1
    agents = m.sample_agents(x, pos)  # (B, C, 1, 2)
    for bg in range(4):
        b, g = divmod(bg, 2)
        for a in range(2):
            py, px = pix[bg, a].tolist()
            torch.testing.assert_close(agents[b, 2 * g:2 * g + 2, 0, a], x[b, 2 * g:2 * g + 2, py, px])
    half = m.sample_agents(x, torch.tensor([0.0, 0.25]).expand(4, 1, 1, 2))  # halfway between (2, 2) and (2, 3)
    torch.testing.assert_close(half[..., 0, 0], (x[:, :, 2, 2] + x[:, :, 2, 3]) / 2)


def test_routing_picks_regions_of_highest_affinity(monkeypatch):
    m = build(dim=4, num_heads=2, n_win=2, topk=2, offset_kernel=1, offset_stride=2, rpe_size=4)
    with torch.no_grad():
        nn.init.zeros_(m.conv_offset_q[3].weight)  # agents at (0.75, 2.25) pixel coordinates: inside their region
        m.qkv_conv.qkv.weight.zero_()
        m.qkv_conv.qkv.bias.zero_()
        m.qkv_conv.qkv.weight[4:8, :, 0, 0] = torch.eye(4)  # k = x
        m.proj_q.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        m.proj_q.bias.zero_()
    vals = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [3, 0, 1, 0], [0, 2, 0, 3]])  # region r's constant value
    x = vals.view(2, 2, 1, 1, 4).expand(2, 2, 2, 2, 4).permute(0, 2, 1, 3, 4).reshape(1, 4, 4, 4)
    seen = []
    original = dbra_mod.route_topk
    monkeypatch.setattr(dbra_mod, "route_topk", lambda *a, **k: seen.append(original(*a, **k)) or seen[-1])
    m(x)
    # affinities vals @ vals.T: rows [1,0,3,0], [0,1,0,2], [3,0,10,0], [0,2,0,13]
    assert seen[0].tolist() == [[[2, 0], [3, 1], [2, 0], [3, 1]]]


def test_rpe_bias_at_zero_displacement_reads_the_table_centre():
    m = build(dim=4, num_heads=2, n_win=1, topk=1, rpe_size=5)  # table (2, 9, 9), centre (4, 4)
    with torch.no_grad():
        m.rpe_table.zero_()
        m.rpe_table[0, 4, 4], m.rpe_table[1, 4, 4] = 3.0, -2.0
        m.rpe_table[0, 4, 2] = 1.5  # displacement query - agent = (0, -2) pixels
    agents = torch.randn(1, 4, 2, 2)
    pix = torch.tensor([[1, 1], [1, 3], [3, 1], [3, 3]])
    pos = (pix.float() / 4 * 2 - 1).view(1, 2, 2, 2)
    out = m.back_attention(torch.zeros(1, 4, 5, 5), agents, pos, "torch")  # q = 0: logits are the bias alone
    va = m.proj_v(agents).reshape(4, 4)  # (C, agent)
    for (py, px), bias in [((1, 1), ([3.0, 1.5, 0, 0], [-2.0, 0, 0, 0])), ((0, 0), ([0.0] * 4, [0.0] * 4)),
                           ((3, 3), ([0, 0, 0, 3.0], [0, 0, 0, -2.0]))]:
        for h in range(2):
            want = va[2 * h:2 * h + 2] @ torch.softmax(torch.tensor(bias[h]), 0)
            torch.testing.assert_close(out[0, 2 * h:2 * h + 2, py, px], want)


# -- official weights -------------------------------------------------------------------------------------------------


# The documented tables (official-state-dicts.md, "dbra — S-stage1/2/4"), key and shape per entry, kept as data.
OFFICIAL_TABLES = json.loads((Path(__file__).parent / "data" / "dbra_official_state_dicts.json").read_text())["tables"]
S_CONFIGS = {  # the attnbench config each table's header gives
    "S-stage1": dict(dim=64, num_heads=2, n_win=7, topk=4, n_groups=1, offset_kernel=9, offset_stride=8,
                     ffn_ratio=3, rpe_size=56, lce_kernel=5, offset_channels=1, auto_pad=False),
    "S-stage2": dict(dim=128, num_heads=4, n_win=7, topk=8, n_groups=2, offset_kernel=7, offset_stride=4,
                     ffn_ratio=3, rpe_size=28, lce_kernel=5, offset_channels=1, auto_pad=False),
    "S-stage4": dict(dim=512, num_heads=16, n_win=7, topk=49, n_groups=8, offset_kernel=3, offset_stride=1,
                     ffn_ratio=1, rpe_size=7, lce_kernel=5, offset_channels=1, auto_pad=False),
}


def official_table(stage):
    return {key: tuple(shape) for key, shape in OFFICIAL_TABLES[stage].items()}


@pytest.mark.parametrize("stage", list(OFFICIAL_TABLES))
def test_keys_and_shapes_equal_the_official_table(stage):
    table = official_table(stage)
    assert len(table) == 29
    m = attentions.build("dbra", **S_CONFIGS[stage])
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == table
    assert sum(p.numel() for p in m.parameters()) == sum(math.prod(s) for s in table.values())


def test_official_state_dict_loads_and_mismatches_are_listed():
    cfg = S_CONFIGS["S-stage1"]
    sd = {k: torch.randn(s) for k, s in official_table("S-stage1").items()}
    m = attentions.from_official("dbra", sd, **cfg)
    assert all(torch.equal(m.state_dict()[k], v) for k, v in sd.items())
    bad = dict(sd, **{"proj_k.weight": torch.randn(64, 32, 1, 1)})
    del bad["rpe_table"]
    with pytest.raises(OfficialStateDictError, match=r"missing keys: rpe_table") as e:
        attentions.from_official("dbra", bad, **cfg)
    assert "proj_k.weight: got (64, 32, 1, 1), expected (64, 64, 1, 1)" in str(e.value)
    with pytest.raises(OfficialStateDictError, match=r"conv_offset_q\.3\.weight: got \(1, 64, 1, 1\)"):
        attentions.from_official("dbra", sd, **dict(cfg, offset_channels=2))  # paper-intent offsets need (2, C/G, 1, 1)


# -- errors and cost ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,name", [
    (dict(topk=50), "topk"), (dict(topk=0), "topk"), (dict(n_groups=3), "n_groups"),
    (dict(num_heads=4, n_groups=8, dim=64), "n_groups"), (dict(offset_channels=3), "offset_channels"),
    (dict(offset_kernel=4), "offset_kernel"), (dict(offset_kernel=0), "offset_kernel"),
    (dict(offset_stride=0), "offset_stride"), (dict(ffn_ratio=0), "ffn_ratio"), (dict(ffn_ratio=-1.0), "ffn_ratio"),
    (dict(lce_kernel=4), "lce_kernel"), (dict(lce_kernel=-1), "lce_kernel"), (dict(rpe_size=0), "rpe_size"),
    (dict(rpe_size=(4, 0)), "rpe_size"), (dict(rpe_size=(4, 4, 4)), "rpe_size"), (dict(impl="cuda"), "impl"),
    (dict(n_win=0), "n_win"), (dict(stride=8), "stride"),
])
def test_bad_config_names_the_parameter(kwargs, name):
    with pytest.raises(ConfigError, match=rf"\b{name}\b"):
        attentions.build("dbra", **kwargs)


@pytest.mark.parametrize("shape", [(28, 28), (56, 63), (15, 14)])
def test_input_the_official_code_cannot_run_is_a_clear_error(shape):
    m = attentions.build("dbra", auto_pad=False)  # n_win 7, stride 8: 28 gives a 4×4 agent grid; 15 is not a multiple of 7
    with pytest.raises(ValueError, match=rf"H×W = {shape[0]}×{shape[1]}.*multiples of n_win.*auto_pad=True"):
        m(torch.randn(1, *shape, 64))
    assert attentions.build("dbra")(torch.randn(1, *shape, 64)).shape == (1, *shape, 64)  # the default pads


@pytest.mark.parametrize("name", ["dbra", "bra"])
@pytest.mark.parametrize("side", [7, 14, 28, 56])
def test_defaults_run_on_the_common_grids(name, side):
    # the README's first example: defaults on (2, side, side, 64) for the usual stage grids
    assert attentions.build(name, dim=64, num_heads=2)(torch.randn(2, side, side, 64)).shape == (2, side, side, 64)


def test_auto_pad_changes_nothing_on_an_input_that_fits():
    torch.manual_seed(0)
    padded = attentions.build("dbra", dim=64, num_heads=2)
    strict = attentions.build("dbra", dim=64, num_heads=2, auto_pad=False)
    strict.load_state_dict(padded.state_dict())
    x = torch.randn(1, 56, 56, 64)
    assert torch.equal(padded(x), strict(x))


def test_cost_at_debiformer_s_stage1():
    c = attentions.build("dbra").cost(56, 56)
    assert c.keys_per_query == 49
    assert c.macs["attention"] == 2 * 49 * 4 * 64 * 64 + 2 * 3136 * 49 * 64
    assert c.macs["routing"] == 49 * 49 * 64
    assert c.total == 76_524_672  # fvcore on the official stage-1 DBRA: 76.5 M (spec §3.4)


@pytest.mark.parametrize("cfg,shape", [({}, (56, 56)), (dict(CASES["auto_pad_offsets1"][0]), (7, 9)),
                                       (dict(SMALL, offset_channels=2, n_groups=2), (14, 28))])
def test_cost_equals_fvcore_count(cfg, shape):
    fvcore_nn = pytest.importorskip("fvcore.nn")
    m = attentions.build("dbra", impl="torch", **cfg)
    fca = fvcore_nn.FlopCountAnalysis(m, torch.randn(1, *shape, m.config.dim))
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    assert fca.total() == m.cost(*shape).total
