"""attentions.inspect: outputs untouched, and the recorded numbers checked against independent computations."""
from __future__ import annotations

import pytest
import torch

import attentions
from attentions.routing import region_merge, routed_attention

CONFIGS = {
    "mhsa": {"impl": "torch"},
    "bra": {"n_win": 4, "topk": 2, "impl": "torch"},
    "dat": {"stride": 4, "offset_kernel": 5, "rpe_size": 16, "n_groups": 2},
    "agent": {"agent_num": 9, "window_size": 16},
    "dbra": {"n_win": 4, "topk": 2, "offset_stride": 2, "rpe_size": 16, "n_groups": 2, "impl": "torch"},
}


def _module(name: str, dtype=torch.float32):
    torch.manual_seed(0)
    return attentions.build(name, dim=32, num_heads=2, **CONFIGS[name]).to(dtype)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_inspecting_leaves_outputs_bit_identical(name):
    m = _module(name)
    x = torch.randn(2, 16, 16, 32, generator=torch.Generator().manual_seed(1))
    for train in (False, True):
        m.train(train)
        with torch.set_grad_enabled(train):
            plain = m(x)
            with attentions.inspect(m, query=(0.3, 0.7)) as rec:
                inspected = m(x)
            after = m(x)
        assert torch.equal(plain, inspected) and torch.equal(plain, after)
        assert len(rec) == 1 and rec.records[0].mechanism == name
    assert "_inspector" not in m.__dict__ and m._inspector is None  # back to the class attribute


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_query_map_is_a_distribution_over_the_grid(name):
    m = _module(name).eval()
    with torch.no_grad(), attentions.inspect(m, query=(0.3, 0.7)) as rec:
        m(torch.randn(1, 16, 16, 32))
    r = rec.records[0]
    assert r.grid == (16, 16) and r.query_pixel == (4, 11)
    qmap = r.data["query_map"]
    assert qmap.shape == (1, 2, 16, 16) and (qmap >= 0).all()
    torch.testing.assert_close(qmap.sum((-1, -2)), torch.ones(1, 2), atol=1e-5, rtol=0)


def test_bra_query_map_reproduces_the_routed_attention_output():
    m = _module("bra", torch.float64).eval()
    x = torch.randn(1, 16, 16, 32, dtype=torch.float64)
    with torch.no_grad(), attentions.inspect(m, query=(0.6, 0.2)) as rec:
        m(x)
        q, k, v, H, W = m._project(x)
        out = region_merge(routed_attention(q, k, v, m.routes(x), 2, m.scale, "official"), 4, H, W)
    r = rec.of(m)[0]
    i, j = r.query_pixel
    v_img = region_merge(v, 4, H, W)  # (1, H, W, C); head h owns channels [16h, 16h + 16)
    for h in range(2):
        via_map = torch.einsum("yx,yxc->c", r.data["query_map"][0, h].double(), v_img[0, :, :, 16 * h:16 * h + 16])
        torch.testing.assert_close(via_map, out[0, i, j, 16 * h:16 * h + 16], atol=1e-6, rtol=1e-5)


def test_mhsa_query_map_is_the_softmax_row():
    m = _module("mhsa", torch.float64).eval()
    x = torch.randn(1, 8, 8, 32, dtype=torch.float64)
    with torch.no_grad(), attentions.inspect(m, query=(0.5, 0.25)) as rec:
        m(x)
    q, k, _ = m.qkv(x.reshape(1, 64, 32)).view(1, 64, 3, 2, 16).permute(2, 0, 3, 1, 4)
    row = torch.softmax(q[0, :, 4 * 8 + 2].unsqueeze(1) @ k[0].transpose(-1, -2) / 4.0, dim=-1).squeeze(1)  # d=16
    torch.testing.assert_close(rec.records[0].data["query_map"][0].double().reshape(2, 64), row, atol=1e-6, rtol=0)


def test_dat_query_map_carries_the_value_path():
    """One group: out[q] = proj_out(per head: proj_v_h(Σ_p map_h[p] · x[p])); the splat is the sampling's adjoint."""
    torch.manual_seed(0)
    m = attentions.build("dat", dim=32, num_heads=2, **{**CONFIGS["dat"], "n_groups": 1}).double().eval()
    x = torch.randn(1, 16, 16, 32, dtype=torch.float64)
    with torch.no_grad(), attentions.inspect(m, query=(0.7, 0.4)) as rec:
        y = m(x)
    r = rec.records[0]
    i, j = r.query_pixel
    w_out, b_out = m.proj_out.weight[:, :, 0, 0], m.proj_out.bias
    out = torch.linalg.solve(w_out, y[0, i, j] - b_out)  # before proj_out
    w_v, b_v = m.proj_v.weight[:, :, 0, 0], m.proj_v.bias
    for h in range(2):
        mixed = torch.einsum("yx,yxc->c", r.data["query_map"][0, h].double(), x[0])
        expected = w_v[16 * h:16 * h + 16] @ mixed + b_v[16 * h:16 * h + 16]
        torch.testing.assert_close(out[16 * h:16 * h + 16], expected, atol=1e-5, rtol=1e-4)


def test_inspect_refuses_a_module_without_recording_points():
    with pytest.raises(ValueError, match="none of the attentions"):
        with attentions.inspect(torch.nn.Linear(2, 2)):
            pass


def test_agent_query_map_carries_the_value_path():
    """out[q] = proj(Σ_p map_h[p] · v_h[p] + dwc(v)[q]): solve the output back through proj and remove the LCE."""
    m = _module("agent", torch.float64).eval()
    x = torch.randn(1, 16, 16, 32, dtype=torch.float64)
    with torch.no_grad(), attentions.inspect(m, query=(0.2, 0.9)) as rec:
        y = m(x)
        v = m.qkv(x)[..., 64:]  # (1, H, W, C)
        lce = m.dwc(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    r = rec.records[0]
    i, j = r.query_pixel
    out = torch.linalg.solve(m.proj.weight, y[0, i, j] - m.proj.bias) - lce[0, i, j]
    for h in range(2):
        via_map = torch.einsum("yx,yxc->c", r.data["query_map"][0, h].double(), v[0, :, :, 16 * h:16 * h + 16])
        torch.testing.assert_close(via_map, out[16 * h:16 * h + 16], atol=1e-5, rtol=1e-4)
