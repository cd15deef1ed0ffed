"""bra and dbra with impl="triton" equal impl="torch" (outputs and all parameter/input grads), and impl="auto"
resolves to torch on CPU and to triton on CUDA."""
from __future__ import annotations

import pytest
import torch
from kernel_refs import DEVICE

import attentions
from attentions.backends import choose

pytestmark = pytest.mark.triton

CONFIGS = {
    "bra": (dict(dim=32, num_heads=2, n_win=2, topk=2, lce_kernel=3), (2, 6, 6)),  # nq = nk = 9
    "dbra": (dict(dim=32, num_heads=2, n_win=2, topk=2, n_groups=2, offset_kernel=3, offset_stride=2, rpe_size=8),
             (1, 8, 8)),
}


def _run(name, impl, seed=0):
    cfg, (B, H, W) = CONFIGS[name]
    torch.manual_seed(seed)
    module = attentions.build(name, impl=impl, **cfg).to(DEVICE)
    x = torch.randn(B, H, W, cfg["dim"], generator=torch.Generator().manual_seed(1)).to(DEVICE).requires_grad_()
    out = module(x)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(DEVICE))
    grads = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("name", list(CONFIGS))
def test_triton_impl_equals_torch_impl(name):
    out_t, gx_t, gp_t = _run(name, "torch")
    out_k, gx_k, gp_k = _run(name, "triton")
    torch.testing.assert_close(out_k, out_t, atol=1e-4, rtol=0)
    torch.testing.assert_close(gx_k, gx_t, atol=1e-4, rtol=0)
    assert gp_k.keys() == gp_t.keys() and len(gp_t) > 0
    for n in gp_t:
        torch.testing.assert_close(gp_k[n], gp_t[n], atol=1e-4, rtol=0, msg=lambda m: f"{name}.{n}: {m}")
    if name == "dbra":  # the kernels' extra gradients reach the RPE table and, through pos, the offset network
        assert gp_k["rpe_table"].abs().sum() > 0
        assert any(n.startswith("conv_offset") and gp_k[n].abs().sum() > 0 for n in gp_k)


def test_auto_resolves_by_device():
    x = torch.randn(1, 8, 8, 32, device=DEVICE)
    want = "triton" if DEVICE == "cuda" else "torch"
    assert choose("routed", "auto", x, "test").backend == want
    dbra = attentions.build("dbra", **CONFIGS["dbra"][0])  # impl defaults to "auto"
    assert dbra._impls(x) == (want, want)
