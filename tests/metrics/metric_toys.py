"""Toy modules with known costs, and a MetricContext factory, for the metric tests."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnbench.metrics.base import MetricContext


def make_ctx(module_fn, H=4, W=4, dim=8, batch=1, pass_="forward", mode="eager", settings=None, config=None):
    """A CPU float32 cell around ``module_fn`` (a zero-argument module factory)."""
    return MetricContext(
        attention="toy",
        config={"dim": dim, **(config or {})},
        make_module=module_fn,
        batch=batch,
        height=H,
        width=W,
        dtype=torch.float32,
        device=torch.device("cpu"),
        pass_=pass_,
        mode=mode,
        settings=settings or {},
    )


class ToyLinear(nn.Module):
    """(B, H, W, C) -> (B, H, W, D) by one Linear: B·H·W·C·D MACs."""

    def __init__(self, c=8, d=16, bias=True):
        super().__init__()
        self.fc = nn.Linear(c, d, bias=bias)

    def forward(self, x):
        return self.fc(x)


class ToyBmm(nn.Module):
    """Two explicit bmm over rows of the grid: (B·H, W, C) x (B·H, C, W) then (B·H, W, W) x (B·H, W, C)."""

    def forward(self, x):
        B, H, W, C = x.shape
        a = x.reshape(B * H, W, C)
        s = torch.bmm(a, a.transpose(1, 2))  # B·H·W·C·W MACs
        return torch.bmm(s, a).reshape(B, H, W, C)  # B·H·W·W·C MACs


class ToyConv(nn.Module):
    """3×3 conv (C -> D) then a depthwise 3×3 conv on D, padding 1, on the channels-first view."""

    def __init__(self, c=8, d=4):
        super().__init__()
        self.conv = nn.Conv2d(c, d, 3, padding=1, bias=False)
        self.dw = nn.Conv2d(d, d, 3, padding=1, groups=d, bias=False)

    def forward(self, x):
        return self.dw(self.conv(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)


class ToySdpa(nn.Module):
    """SDPA with 2 heads, queries from all tokens, keys/values from the first ``nk`` tokens, v of head dim dv."""

    def __init__(self, nk=5, d=4, dv=3):
        super().__init__()
        self.nk, self.d, self.dv = nk, d, dv

    def forward(self, x):
        B, H, W, C = x.shape
        t = x.reshape(B, H * W, C)
        q = t[..., : 2 * self.d].reshape(B, H * W, 2, self.d).transpose(1, 2)
        k = t[:, : self.nk, : 2 * self.d].reshape(B, self.nk, 2, self.d).transpose(1, 2)
        v = t[:, : self.nk, : 2 * self.dv].reshape(B, self.nk, 2, self.dv).transpose(1, 2)
        return F.scaled_dot_product_attention(q, k, v)


class ToyRouting(nn.Module):
    """Zero-cost ops only: softmax, top-k, gather, index_select, mean, element-wise."""

    def forward(self, x):
        B, H, W, C = x.shape
        t = x.reshape(B, H * W, C)
        p = torch.softmax(t, dim=-1) * 2 + 1
        idx = torch.topk(p.mean(-1), k=2, dim=-1).indices
        g = torch.gather(t, 1, idx.unsqueeze(-1).expand(B, 2, C))
        return g + t.reshape(B * H * W, C).index_select(0, idx[0]).view(1, 2, C)


class ToyCumsum(nn.Module):
    """An op neither counter knows (cumsum) next to a counted Linear."""

    def __init__(self, c=8):
        super().__init__()
        self.fc = nn.Linear(c, c)

    def forward(self, x):
        return torch.cumsum(self.fc(x), dim=1)


class ToyMLP(nn.Module):
    """Linear(C, hidden) -> GELU -> Linear(hidden, C) on (B, H, W, C)."""

    def __init__(self, c=64, hidden=256):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(c, hidden), nn.GELU(), nn.Linear(hidden, c)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))
