"""Full multi-head self-attention over all H·W tokens: the baseline every sweep compares against.

Source: the plain global ``Attention`` (``qkv`` Linear + ``proj`` Linear) of ViT, "An Image is Worth 16x16 Words",
arXiv 2010.11929; the layout timm's ``Attention`` and BiFormer's ``models/_common.py`` share, so their weights load
as they are. Scale is head_dim^-0.5.

Differences from official: none in the maths. ``impl="sdpa"`` computes the attention with
``torch.nn.functional.scaled_dot_product_attention``; ``impl="torch"`` with the explicit softmax(QKᵀ)V, for
checking and for counters that cannot see inside SDPA; ``impl="auto"`` (default) is SDPA wherever
:func:`attentions.backends.can_run_sdpa` allows it (every device and dtype of a torch that has it).
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .backends import select
from .base import Attention, check_input
from .config import AttentionConfig
from .cost import Cost
from .profiling import part
from .registry import register

__all__ = ["MHSA", "MHSAConfig"]


@dataclasses.dataclass(frozen=True)
class MHSAConfig(AttentionConfig):
    """
    Args:
        qkv_bias: bias in the qkv projection (True in ViT/timm; BiFormer's stage-4 MHSA uses False).
        impl: ``"sdpa"`` (``scaled_dot_product_attention``), ``"torch"`` (the explicit math path) or ``"auto"``
            (the first of them that can run, :mod:`attentions.backends`).
    """

    qkv_bias: bool = True
    impl: Literal["auto", "sdpa", "torch"] = "auto"


@register("mhsa")
class MHSA(Attention[MHSAConfig]):
    """Global multi-head self-attention on (B, H, W, C)."""

    def build(self, c: MHSAConfig) -> None:
        self.scale = c.head_dim**-0.5
        self.qkv = nn.Linear(c.dim, 3 * c.dim, bias=c.qkv_bias)
        self.proj = nn.Linear(c.dim, c.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.config.dim, self.name)
        B, H, W, C = x.shape
        m = self.config.num_heads
        with part("mhsa", "projections"):
            qkv = self.qkv(x.reshape(B, H * W, C))
        q, k, v = qkv.view(B, H * W, 3, m, C // m).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, m, N, d)
        if self._inspector is not None:
            self._inspector.record(self, "mhsa_row", q=q, k=k, size=(H, W))
        with part("mhsa", "attention"):
            if select(self, "attention", q) == "sdpa":
                out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
            else:
                attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
                out = attn @ v
        out = out.transpose(1, 2).reshape(B, H, W, C)
        with part("mhsa", "projections"):
            return self.proj(out)

    def cost(self, H: int, W: int) -> Cost:
        N, C = H * W, self.config.dim
        return Cost(
            macs={"projections": N * C * 3 * C + N * C * C, "attention": 2 * N * N * C},
            keys_per_query=N,
        )
