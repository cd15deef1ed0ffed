"""Independent float64 references for the kernel tests, written with explicit loops and indexing.

Neither uses ``torch.gather`` nor ``grid_sample``: the routed reference concatenates the routed regions by
Python indexing, and the pixel-agent reference evaluates the bilinear lookup tap by tap, so autograd through it
gives the gradients of every input (pos included, through the fractional part of the source index).
"""
from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")  # the kernels need triton (CPU: its interpreter)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def naive_routed_attention(q, k, v, idx, num_heads: int, scale: float) -> torch.Tensor:
    """Loop over (batch, region, head): softmax(q K_rᵀ·scale) V_r with K_r the concatenated routed regions."""
    B, P, nq, C = q.shape
    d = C // num_heads
    rows = []
    for b in range(B):
        for p in range(P):
            keys = torch.cat([k[b, r] for r in idx[b, p].tolist()])  # (topk·nk, C)
            vals = torch.cat([v[b, r] for r in idx[b, p].tolist()])
            heads = []
            for h in range(num_heads):
                c = slice(h * d, (h + 1) * d)
                attn = torch.softmax(q[b, p, :, c] @ keys[:, c].T * scale, dim=-1)
                heads.append(attn @ vals[:, c])
            rows.append(torch.cat(heads, dim=-1))
    return torch.stack(rows).view(B, P, nq, C)


def _axis(n: int, dtype) -> torch.Tensor:
    if n == 1:
        return torch.zeros(1, dtype=dtype)
    return torch.arange(n, dtype=dtype) / (n - 1) * 2 - 1


def naive_pixel_agent_attention(q, k, v, pos, table, n_groups: int, H: int, W: int, scale: float):
    """Loop over (batch·head): logits + bilinear(table[h], 0.5·(q_coord − pos)) with zero padding, softmax, @ v."""
    Z, N, d = q.shape
    m, Th, Tw = table.shape
    qy = _axis(H, q.dtype).repeat_interleave(W).to(q.device)
    qx = _axis(W, q.dtype).repeat(H).to(q.device)
    outs = []
    for z in range(Z):
        b, h = divmod(z, m)
        p = pos[b * n_groups + h // (m // n_groups)]  # (Ns, 2) as (y, x)
        iy = ((qy[:, None] - p[None, :, 0]) * 0.5 + 1) / 2 * (Th - 1)
        ix = ((qx[:, None] - p[None, :, 1]) * 0.5 + 1) / 2 * (Tw - 1)
        y0, x0 = iy.floor(), ix.floor()
        fy, fx = iy - y0, ix - x0
        y0, x0 = y0.long(), x0.long()

        def tap(yy, xx):
            inside = (yy >= 0) & (yy < Th) & (xx >= 0) & (xx < Tw)
            val = table[h][yy.clamp(0, Th - 1), xx.clamp(0, Tw - 1)]
            return torch.where(inside, val, torch.zeros_like(val))

        bias = ((1 - fy) * (1 - fx) * tap(y0, x0) + (1 - fy) * fx * tap(y0, x0 + 1)
                + fy * (1 - fx) * tap(y0 + 1, x0) + fy * fx * tap(y0 + 1, x0 + 1))
        attn = torch.softmax(q[z] @ k[z].T * scale + bias, dim=-1)
        outs.append(attn @ v[z])
    return torch.stack(outs)


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """‖a − ref‖ / ‖ref‖ in float64."""
    a, ref = a.detach().double(), ref.detach().double()
    return float((a - ref).norm() / ref.norm().clamp_min(1e-30))


def leaves(*tensors, dtype=torch.float32):
    """Detached copies on DEVICE in ``dtype`` that require grad."""
    return [t.detach().to(DEVICE, dtype).requires_grad_() for t in tensors]


def grads_of(out: torch.Tensor, grad: torch.Tensor, inputs) -> list[torch.Tensor]:
    return list(torch.autograd.grad(out, inputs, grad.to(out.dtype)))
