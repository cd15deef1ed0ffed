"""BRA (attentions/bra.py) against references written here from shared/design/bra-biformer.md §2.3.

The naive reference works on the image in float64 with explicit loops over batch, regions and heads, cuts regions
by slicing, and computes the LCE as an explicit sum of shifted images, so it shares no reshape or conv with the
module.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import attentions
from attentions import ConfigError, OfficialStateDictError
from attentions.bra import BRA

SMALL = dict(dim=8, num_heads=2, n_win=2, topk=2, lce_kernel=3)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _build(seed: int = 0, **kw) -> BRA:
    torch.manual_seed(seed)
    m = attentions.build("bra", **{**SMALL, **kw})
    with torch.no_grad():  # non-zero biases, so padded tokens (= bias vectors) matter
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=_gen(seed + 1)))
    return m


def _tokens(t: torch.Tensor, n_win: int, r: int) -> torch.Tensor:
    """Region r of an image t (H, W, C) as (h·w, C), row-major."""
    H, W, C = t.shape
    h, w = H // n_win, W // n_win
    i, j = divmod(r, n_win)
    return t[i * h : (i + 1) * h, j * w : (j + 1) * w].reshape(-1, C)


def _lce(v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Depthwise conv of v (H, W, C), zero padding, as a sum of shifted images."""
    H, W, C = v.shape
    ks = weight.shape[-1]
    vp = F.pad(v, (0, 0, ks // 2, ks // 2, ks // 2, ks // 2))
    out = bias.expand(H, W, C).clone()
    for a in range(ks):
        for b in range(ks):
            out += weight[:, 0, a, b] * vp[a : a + H, b : b + W]
    return out


def naive_bra(x: torch.Tensor, sd: dict, n_win: int, topk: int, num_heads: int) -> torch.Tensor:
    """Float64 BRA on (B, H, W, C) with the official parameters ``sd``; pads like the official auto_pad."""
    sd = {k: v.double() for k, v in sd.items()}
    x = x.double()
    B, H_in, W_in, C = x.shape
    H, W = -(-H_in // n_win) * n_win, -(-W_in // n_win) * n_win
    x = F.pad(x, (0, 0, 0, W - W_in, 0, H - H_in))  # before the projection: padded tokens become the bias
    qkv = torch.einsum("bhwc,oc->bhwo", x, sd["qkv.qkv.weight"]) + sd["qkv.qkv.bias"]
    scale, d, P = C**-0.5, C // num_heads, n_win**2
    out = torch.zeros(B, H, W, C, dtype=torch.float64)
    for b in range(B):
        q, k, v = qkv[b, ..., :C], qkv[b, ..., C : 2 * C], qkv[b, ..., 2 * C :]
        q_r = torch.stack([_tokens(q, n_win, r).mean(0) for r in range(P)])
        k_r = torch.stack([_tokens(k, n_win, r).mean(0) for r in range(P)])
        routes = torch.topk((q_r * scale) @ k_r.T, topk, dim=-1).indices
        h, w = H // n_win, W // n_win
        for r in range(P):
            keys = torch.cat([_tokens(k, n_win, s) for s in routes[r].tolist()])
            vals = torch.cat([_tokens(v, n_win, s) for s in routes[r].tolist()])
            qt = _tokens(q, n_win, r)
            o = torch.empty_like(qt)
            for head in range(num_heads):
                sl = slice(head * d, (head + 1) * d)
                attn = torch.softmax(torch.einsum("id,jd->ij", qt[:, sl] * scale, keys[:, sl]), dim=-1)
                o[:, sl] = attn @ vals[:, sl]
            i, j = divmod(r, n_win)
            out[b, i * h : (i + 1) * h, j * w : (j + 1) * w] = o.view(h, w, C)
        if "lepe.weight" in sd:
            out[b] += _lce(v, sd["lepe.weight"], sd["lepe.bias"])
    out = torch.einsum("bhwc,oc->bhwo", out, sd["wo.weight"]) + sd["wo.bias"]
    return out[:, :H_in, :W_in]


REFERENCE_CASES = {
    "divisible": (dict(), (2, 8, 6)),
    "auto_pad": (dict(n_win=3, topk=3, auto_pad=True), (2, 7, 10)),
    "no-lce-topk1": (dict(topk=1, lce_kernel=0, num_heads=4), (1, 6, 6)),
    "lce5-3heads": (dict(dim=12, num_heads=3, n_win=3, topk=4, lce_kernel=5), (1, 9, 6)),
}


@pytest.mark.parametrize("impl", ["torch", "official"])
@pytest.mark.parametrize("case", REFERENCE_CASES, ids=list(REFERENCE_CASES))
def test_matches_naive_reference(case, impl):
    kw, (B, H, W) = REFERENCE_CASES[case]
    m = _build(impl=impl, **kw)
    c = m.config
    x = torch.randn(B, H, W, c.dim, generator=_gen(3))
    ref = naive_bra(x, m.state_dict(), c.n_win, c.topk, c.num_heads)
    torch.testing.assert_close(m(x).double(), ref, atol=1e-5, rtol=0)


def test_all_regions_no_lce_equals_full_attention():
    m = _build(n_win=3, topk=9, lce_kernel=0, num_heads=2)
    x = torch.randn(2, 6, 9, 8, generator=_gen(4))
    sd = {k: v.double() for k, v in m.state_dict().items()}
    t = x.double().reshape(2, -1, 8)
    q, k, v = (t @ sd["qkv.qkv.weight"].T + sd["qkv.qkv.bias"]).split(8, dim=-1)
    heads = lambda z: z.view(2, -1, 2, 4).transpose(1, 2)  # noqa: E731
    attn = torch.softmax(heads(q) @ heads(k).transpose(-2, -1) * 8**-0.5, dim=-1)  # scale = dim^-0.5
    full = (attn @ heads(v)).transpose(1, 2).reshape(2, -1, 8) @ sd["wo.weight"].T + sd["wo.bias"]
    torch.testing.assert_close(m(x).double(), full.view(2, 6, 9, 8), atol=1e-5, rtol=0)


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize(
    "kw,H,W",
    [(dict(), 8, 8), (dict(), 12, 8), (dict(auto_pad=True), 7, 9), (dict(n_win=4, auto_pad=True), 5, 3)],
    ids=["8x8", "12x8", "7x9-pad", "5x3-pad"],
)
def test_shapes(kw, H, W, B):
    m = _build(**kw)
    assert m(torch.randn(B, H, W, 8, generator=_gen())).shape == (B, H, W, 8)


# reduced precision on CPU: same routes on these inputs; bf16 has an 8-bit mantissa, fp16 an 11-bit one
DTYPE_ATOL = {torch.bfloat16: 5e-2, torch.float16: 1e-2}


@pytest.mark.parametrize("dtype", list(DTYPE_ATOL), ids=str)
def test_reduced_precision_close_to_float32(dtype):
    m = _build(auto_pad=True)
    x = torch.randn(2, 7, 9, 8, generator=_gen(5))
    ref = m(x)
    low = m.to(dtype)
    xl = x.to(dtype).requires_grad_()
    out = low(xl)
    assert out.dtype == dtype and out.shape == ref.shape
    out.float().sum().backward()
    assert torch.isfinite(out.float()).all() and torch.isfinite(xl.grad.float()).all()
    torch.testing.assert_close(out.float(), ref, atol=DTYPE_ATOL[dtype], rtol=0)


def test_gradients_reach_every_parameter():
    m = _build(auto_pad=True)
    x = torch.randn(2, 7, 9, 8, generator=_gen(6), requires_grad=True)
    m(x).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_no_gradient_flows_through_routing():
    m = _build()
    out = m(torch.randn(1, 8, 8, 8, generator=_gen(7), requires_grad=True))
    seen, stack = set(), [out.grad_fn]
    while stack:  # every autograd node behind the output
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(nxt for nxt, _ in fn.next_functions)
    names = {type(fn).__name__ for fn in seen}
    assert not any(n.startswith(("Mean", "Topk", "Sort")) for n in names), names  # region means, top-k
    # and the routes themselves carry no graph
    assert m.routes(torch.randn(1, 8, 8, 8, requires_grad=True)).grad_fn is None


def test_module_routes_by_region_mean_affinity():
    # q = first two channels of x, k = last two: affinities are those of the hand-made case in test_routing
    from test_routing import _hand_made_image

    q_img, k_img, expected = _hand_made_image()
    m = attentions.build("bra", dim=4, num_heads=1, n_win=2, topk=2)
    w = torch.zeros(12, 4)
    w[0, 0] = w[1, 1] = w[4, 2] = w[5, 3] = 1.0
    with torch.no_grad():
        m.qkv.qkv.weight.copy_(w)
        m.qkv.qkv.bias.zero_()
    idx = m.routes(torch.cat([q_img, k_img], dim=-1) * 2)  # scaling both by 2 keeps the order
    assert idx.tolist() == [expected]


def test_official_and_torch_impls_agree_on_values_and_gradients():
    x0 = torch.randn(2, 7, 10, 8, generator=_gen(8))
    up = torch.randn(2, 7, 10, 8, generator=_gen(9))
    res = {}
    for impl in ("official", "torch", "auto"):
        m = _build(impl=impl, n_win=3, topk=4, auto_pad=True)
        x = x0.clone().requires_grad_()
        out = m(x)
        (out * up).sum().backward()
        res[impl] = [out.detach(), x.grad] + [p.grad for p in m.parameters()]
    for impl in ("torch", "auto"):
        for a, b in zip(res[impl], res["official"]):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_same_seed_same_output_and_finite_on_large_inputs():
    x = torch.randn(2, 8, 8, 8, generator=_gen(10))
    a, b = _build(seed=3), _build(seed=3)
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), a(x))
    big = (x * 1e3).requires_grad_()
    out = a(big)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(big.grad).all()


@pytest.mark.parametrize(
    "kw,needle",
    [
        (dict(n_win=7, topk=50), "topk=50"),
        (dict(n_win=2, topk=0), "topk=0"),
        (dict(dim=64, num_heads=3), "num_heads=3"),
        (dict(lce_kernel=4), "lce_kernel=4"),
        (dict(lce_kernel=-3), "lce_kernel=-3"),
        (dict(n_win=0), "n_win=0"),
        (dict(windows=7), "'windows'"),
        (dict(impl="cuda"), "impl='cuda'"),
    ],
)
def test_config_errors_name_the_parameter(kw, needle):
    with pytest.raises(ValueError, match=needle) as e:
        attentions.build("bra", **kw)
    assert isinstance(e.value, ConfigError)
    if "topk=50" in needle:
        assert "[1, n_win²=49]" in str(e.value)


def test_indivisible_input_without_auto_pad_is_a_clear_error():
    m = attentions.build("bra", dim=8, num_heads=2, n_win=7)
    with pytest.raises(ValueError, match=r"H=10, W=14.*n_win=7.*auto_pad=True"):
        m(torch.zeros(1, 10, 14, 8))
    with pytest.raises(ValueError, match=r"auto_pad=True"):
        m.cost(10, 14)
    with pytest.raises(ValueError, match=r"C=8"):
        m(torch.zeros(1, 14, 14, 4))


# shared/design/official-state-dicts.md, `bra` tables (BiFormer-S stages 1-3)
OFFICIAL_TABLES = {
    "S-stage1": (dict(dim=64, num_heads=2, n_win=7, topk=1, lce_kernel=5), 64),
    "S-stage2": (dict(dim=128, num_heads=4, n_win=7, topk=4, lce_kernel=5), 128),
    "S-stage3": (dict(dim=256, num_heads=8, n_win=7, topk=16, lce_kernel=5), 256),
}


def _official_sd(C: int) -> dict[str, torch.Tensor]:
    shapes = {
        "lepe.weight": (C, 1, 5, 5),
        "lepe.bias": (C,),
        "qkv.qkv.weight": (3 * C, C),
        "qkv.qkv.bias": (3 * C,),
        "wo.weight": (C, C),
        "wo.bias": (C,),
    }
    g = _gen(11)
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


@pytest.mark.parametrize("stage", OFFICIAL_TABLES, ids=list(OFFICIAL_TABLES))
def test_from_official_loads_the_documented_layout(stage):
    config, C = OFFICIAL_TABLES[stage]
    sd = _official_sd(C)
    m = attentions.from_official("bra", sd, **config)
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_from_official_errors_list_the_keys():
    config, C = OFFICIAL_TABLES["S-stage1"]
    sd = _official_sd(C)
    del sd["wo.bias"]
    sd["qkv.qkv.weight"] = torch.zeros(3 * C, C, 1, 1)  # the DBRA conv layout, not BRA's Linear
    sd["router.emb.weight"] = torch.zeros(C, C)
    with pytest.raises(OfficialStateDictError) as e:
        attentions.from_official("bra", sd, **config)
    assert e.value.missing == ["wo.bias"] and e.value.unexpected == ["router.emb.weight"]
    assert e.value.wrong_shape == ["qkv.qkv.weight: got (192, 64, 1, 1), expected (192, 64)"]
    assert "wo.bias" in str(e.value) and "router.emb.weight" in str(e.value)


def test_defaults_are_biformer_stage1():
    c = attentions.build("bra").config
    assert (c.dim, c.num_heads, c.n_win, c.topk, c.lce_kernel, c.auto_pad, c.impl) == (64, 2, 7, 1, 5, False, "auto")


def test_cost_hand_count():
    m = attentions.build("bra", dim=64, num_heads=2, n_win=7, topk=4, lce_kernel=5)
    cost = m.cost(56, 56)  # N = 3136 tokens, P = 49 regions of 64 tokens, 4 routed -> 256 keys per query
    assert cost.macs["projections"] == 3136 * 64 * 192 + 3136 * 64 * 64 == 51_380_224
    assert cost.macs["routing"] == 49 * 49 * 64 == 153_664
    assert cost.macs["attention"] == 2 * 3136 * 256 * 64 == 102_760_448
    assert cost.macs["lce"] == 3136 * 64 * 25 == 5_017_600
    assert cost.keys_per_query == 256
    padded = attentions.build("bra", dim=64, num_heads=2, n_win=7, topk=4, auto_pad=True)
    assert padded.cost(50, 53) == cost  # counted on the padded 56x56 the module computes on


class _MacCounter(TorchDispatchMode):
    """MACs of the matmuls and convolutions the module actually runs, by kind."""

    def __init__(self):
        super().__init__()
        self.macs = {"mm": 0, "bmm": 0, "conv": 0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in ("mm", "addmm"):
            a = args[-2]
            self.macs["mm"] += a.shape[0] * a.shape[1] * out.shape[1]
        elif name == "bmm":
            self.macs["bmm"] += out.numel() * args[0].shape[-1]
        elif name == "convolution":
            self.macs["conv"] += out.numel() * args[1][0].numel()  # per output: k² · C_in/groups
        return out


def test_cost_matches_the_ops_actually_run():
    m = _build(dim=8, n_win=2, topk=3, lce_kernel=3, impl="official")
    with torch.no_grad(), _MacCounter() as counter:
        m(torch.randn(1, 6, 4, 8))
    cost = m.cost(6, 4)
    assert counter.macs["mm"] == cost.macs["projections"]
    assert counter.macs["bmm"] == cost.macs["routing"] + cost.macs["attention"]
    assert counter.macs["conv"] == cost.macs["lce"]


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("impl", ["torch", "official"])
def test_cost_equals_fvcore_count(impl):
    fvcore = pytest.importorskip("fvcore.nn")
    m = _build(dim=8, n_win=2, topk=3, impl=impl).eval()
    counter = fvcore.FlopCountAnalysis(m, torch.randn(1, 6, 4, 8))
    counter.unsupported_ops_warnings(False)
    counter.uncalled_modules_warnings(False)
    assert counter.total() == m.cost(6, 4).total  # the torch path traces as plain matmuls, like the official one
