"""The blocks of the BiFormer / DeBiFormer backbones, with the attention slot filled by registry name.

Papers: "BiFormer: Vision Transformer with Bi-Level Routing Attention", arXiv 2303.08810 (rayleizhu/BiFormer
``models/biformer.py`` ``Block``, ``models/_common.py`` ``AttentionLePE``, commit 1697bbb); "DeBiFormer: Vision
Transformer with Deformable Agent Bi-level Routing Attention", arXiv 2410.08582 (maclong01/DeBiFormer
``classification/debiformer.py`` ``Block`` and ``TransformerMLPWithConv``, commit 1ceb090).

Both blocks run NCHW in and out (the backbone's layout between stages) and NHWC inside, where the attentions of
the zoo take (B, H, W, C). Sub-module names are the official ones, so official checkpoints load key for key.

Differences from official:
    * Dropout layers (p = 0 in every release) and layer scale (off in every release) are not built.
    * ``AttentionLePE`` (BiFormer's stage-4 global attention) lives here rather than in the ``attentions``
      registry: it is part of the BiFormer model, not one of the five mechanisms the benchmark compares.
    * Which attention fills a slot is a (registry name, config) pair instead of the official ``topk`` code
      (``-2`` -> ``AttentionLePE``, ``> 0`` -> BRA, ...).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

import attentions

__all__ = ["DropPath", "ConvMLP", "LinearMLP", "AttentionLePE", "BiFormerBlock", "DeBiFormerBlock",
           "build_attention", "MODEL_ATTENTIONS", "SlotSpec"]

#: (attention name, its config without ``dim``)
SlotSpec = tuple[str, Mapping[str, Any]]


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``p`` in training, rescale the rest."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ConvMLP(nn.Module):
    """DeBiFormer's ``TransformerMLPWithConv`` on (B, H, W, C): 1×1 conv C→rC, x + DWConv3×3(x), GELU, 1×1 conv.

    Parameter names (``linear1.0``, ``dwc``, ``linear2.0``) are the official ones.
    """

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = int(dim * ratio)
        self.linear1 = nn.Sequential(nn.Conv2d(dim, hidden, 1))
        self.dwc = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.linear2 = nn.Sequential(nn.Conv2d(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear1(x.permute(0, 3, 1, 2))
        x = self.act(x + self.dwc(x))
        return self.linear2(x).permute(0, 2, 3, 1)


class LinearMLP(nn.Sequential):
    """BiFormer's block MLP on (B, H, W, C): Linear C→rC, (Identity: ``mlp_dwconv=False``), GELU, Linear rC→C.

    An ``nn.Sequential`` with the official indices, so the weights are ``mlp.0`` and ``mlp.3``.
    """

    def __init__(self, dim: int, ratio: float):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.Identity(), nn.GELU(), nn.Linear(hidden, dim))


class AttentionLePE(nn.Module):
    """BiFormer's stage-4 global attention: MHSA whose output gets a depthwise conv of the *input* added.

    ``y = proj(softmax(q kᵀ · d^-0.5) v + DWConv_k(x))`` on (B, H, W, C). Official defaults: 8 heads whatever the
    width, ``qkv_bias=False``, ``side_dwconv=5``; the scale is head_dim^-0.5 (unlike BRA's C^-0.5).

    Args:
        dim: channels C.
        num_heads: heads (official: 8).
        qkv_bias: bias of the ``qkv`` Linear (official: False).
        side_dwconv: kernel of the LePE depthwise conv on x; 0 disables it.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, side_dwconv: int = 5):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention_lepe: num_heads={num_heads} is not allowed: expected a divisor of dim={dim}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        k = side_dwconv
        self.lepe = nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) if k > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        m = self.num_heads
        q, k, v = self.qkv(x.reshape(B, H * W, C)).view(B, H * W, 3, m, C // m).permute(2, 0, 3, 1, 4).unbind(0)
        # explicit matmuls (not SDPA) so that fvcore counts them, as it did for the published FLOPs
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B, H, W, C)
        if self.lepe is not None:
            out = out + self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.proj(out)


#: attentions that belong to a model rather than to the zoo's registry
MODEL_ATTENTIONS: dict[str, type[nn.Module]] = {"attention_lepe": AttentionLePE}


def build_attention(spec: SlotSpec, dim: int) -> nn.Module:
    """The module of one attention slot: a model-level attention or ``attentions.build(name, dim=dim, **cfg)``."""
    name, cfg = spec
    if name in MODEL_ATTENTIONS:
        return MODEL_ATTENTIONS[name](dim=dim, **cfg)
    return attentions.build(name, dim=dim, **cfg)


def _pos_embed(dim: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)


def _mlp(kind: str, dim: int, ratio: float) -> nn.Module:
    if kind == "conv":
        return ConvMLP(dim, ratio)
    if kind == "linear":
        return LinearMLP(dim, ratio)
    raise ValueError(f"mlp={kind!r} is not allowed: expected 'conv' (DeBiFormer) or 'linear' (BiFormer)")


def _sub_block(x: torch.Tensor, pos_embed: nn.Module, norm_attn: nn.Module, attn: nn.Module, norm_mlp: nn.Module,
               mlp: nn.Module, drop_path: nn.Module) -> torch.Tensor:
    """One (pos-embed, attention, MLP) sub-block on (B, C, H, W): ``x = x + pos_embed(x)``;
    ``x = x + drop_path(attn(norm_attn(x)))``; ``x = x + drop_path(mlp(norm_mlp(x)))``, the last two channels-last.
    The blocks hold the modules themselves, under the official flat names (``norm3``, ``attn2``, ...)."""
    x = (x + pos_embed(x)).permute(0, 2, 3, 1)
    x = x + drop_path(attn(norm_attn(x)))
    x = x + drop_path(mlp(norm_mlp(x)))
    return x.permute(0, 3, 1, 2)


class BiFormerBlock(nn.Module):
    """One attention and one MLP, pre-norm, after a DWConv position embedding (BiFormer's ``Block``).

    ``x = x + pos_embed(x)``; ``x = x + DropPath(attn(norm1(x)))``; ``x = x + DropPath(mlp(norm2(x)))``.
    Input and output (B, C, H, W).
    """

    def __init__(self, dim: int, slot: SlotSpec, mlp_ratio: float, mlp: str = "linear", drop_path: float = 0.0,
                 pos_embed_kernel: int = 3):
        super().__init__()
        self.pos_embed = _pos_embed(dim, pos_embed_kernel)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = build_attention(slot, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _mlp(mlp, dim, mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _sub_block(x, self.pos_embed, self.norm1, self.attn, self.norm2, self.mlp, self.drop_path)


class DeBiFormerBlock(nn.Module):
    """Two (pos-embed, attention, MLP) sub-blocks in a row (DeBiFormer's ``Block``), one unit of depth.

    Sub-block j ∈ {1, 2}: ``x = x + pos_embed_j(x)``; ``x = x + DropPath(attn_j(norm(x)))``;
    ``x = x + DropPath(mlp_j(norm(x)))`` with norms ``norm1``/``norm2`` (j=1) and ``norm3``/``norm4`` (j=2).
    Input and output (B, C, H, W).
    """

    def __init__(self, dim: int, slots: Sequence[SlotSpec], mlp_ratio: float, mlp: str = "conv",
                 drop_path: float = 0.0, pos_embed_kernel: int = 3):
        super().__init__()
        if len(slots) != 2:
            raise ValueError(f"DeBiFormerBlock takes 2 attention slots (attn1, attn2), got {len(slots)}")
        self.pos_embed1 = _pos_embed(dim, pos_embed_kernel)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn1 = build_attention(slots[0], dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp1 = _mlp(mlp, dim, mlp_ratio)
        self.pos_embed2 = _pos_embed(dim, pos_embed_kernel)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.attn2 = build_attention(slots[1], dim)
        self.norm4 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp2 = _mlp(mlp, dim, mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _sub_block(x, self.pos_embed1, self.norm1, self.attn1, self.norm2, self.mlp1, self.drop_path)
        return _sub_block(x, self.pos_embed2, self.norm3, self.attn2, self.norm4, self.mlp2, self.drop_path)
