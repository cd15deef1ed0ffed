"""fvcore counts the Triton custom ops by their matmuls (run under the interpreter on CPU)."""
from __future__ import annotations

import torch
from fvcore.nn import FlopCountAnalysis

from attentions.routing import routed_attention
from attnbench.metrics._fvcore_handles import fvcore_handles


def count(fn, *inputs):
    class Wrap(torch.nn.Module):
        def forward(self, *xs):
            return fn(*xs)

    analysis = FlopCountAnalysis(Wrap(), inputs).set_op_handle(**fvcore_handles())
    analysis.unsupported_ops_warnings(False)
    return analysis.total(), analysis.unsupported_ops()


def test_routed_attention_op_counts_its_two_matmuls():
    B, P, nq, nk, C, topk = 1, 4, 3, 6, 8, 2
    idx = torch.randint(0, P, (B, P, topk))
    q, k, v = torch.randn(B, P, nq, C), torch.randn(B, P, nk, C), torch.randn(B, P, nk, C)
    total, unsupported = count(lambda q, k, v: routed_attention(q, k, v, idx, 2, 0.3, impl="triton"), q, k, v)
    assert total == 2 * B * P * nq * topk * nk * C and not unsupported


def test_pixel_agent_op_counts_its_two_matmuls():
    from attentions.kernels.pixel_agent_attention import pixel_agent_attention_triton

    Bm, H, W, Ns, d = 2, 3, 4, 5, 8
    q, k, v = torch.randn(Bm, H * W, d), torch.randn(Bm, Ns, d), torch.randn(Bm, Ns, d)
    pos, table = torch.rand(1, Ns, 2) * 2 - 1, torch.randn(Bm, 5, 7)  # B=1 image, m=2 heads, G=1 group
    fn = lambda q, k, v: pixel_agent_attention_triton(q, k, v, pos, table, 1, H, W, 0.5)  # noqa: E731
    total, unsupported = count(fn, q, k, v)
    assert total == 2 * Bm * H * W * Ns * d and not unsupported
