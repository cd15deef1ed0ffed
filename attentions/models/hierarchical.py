"""The four-stage hierarchical backbone of BiFormer and DeBiFormer, each attention slot chosen by registry name.

Papers: "BiFormer: Vision Transformer with Bi-Level Routing Attention", arXiv 2303.08810 (rayleizhu/BiFormer
``models/biformer.py`` ``BiFormer``, commit 1697bbb); "DeBiFormer: Vision Transformer with Deformable Agent
Bi-level Routing Attention", arXiv 2410.08582 (maclong01/DeBiFormer ``classification/debiformer.py``
``DeBiFormer``, commit 1ceb090).

Layout (images NCHW in, logits out)::

    downsample_layers[0]  stem: Conv3×3 s2 (3→C0/2) → BN → GELU → Conv3×3 s2 (C0/2→C0) → BN      /4
    stages[0]             depths[0] blocks at C0
    downsample_layers[i]  Conv3×3 s2 (C(i-1)→Ci) → BN, i = 1..3                                /8, /16, /32
    stages[i]             depths[i] blocks at Ci
    norm                  BatchNorm2d(C3) ("bn", both papers) or LayerNorm over channels ("ln", DAT-style)
    head                  mean over H·W, then Linear(C3 → num_classes)

A block is :class:`~attentions.models.blocks.BiFormerBlock` (one attention slot) or
:class:`~attentions.models.blocks.DeBiFormerBlock` (two slots), chosen by how many slots a stage lists.

Differences from official: the pooled features are taken with ``flatten(2).mean(-1)`` as BiFormer does (fvcore
counts no MACs for it, as for the published figures); ``drop_path_rate`` is honoured (DeBiFormer's training
script parses ``--drop-path`` but never passes it, so its registry values applied).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .blocks import BiFormerBlock, DeBiFormerBlock, SlotSpec
from .official import load_official

__all__ = ["HierarchicalViT"]

NO_DECAY_KEYS = ("rpe_table", "relative_position_bias_table")


def _stem(in_chans: int, dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1), nn.BatchNorm2d(dim // 2), nn.GELU(),
        nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim),
    )


def _downsample(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out))


class _ChannelsLayerNorm(nn.LayerNorm):
    """LayerNorm over C of an NCHW map (the ``ln`` head)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class HierarchicalViT(nn.Module):
    """Conv stem, four stages of pre-norm attention blocks with strided-conv downsampling, pooled linear head.

    Args:
        depths: blocks per stage (4 values).
        embed_dims: channels per stage (4 values).
        slots: per stage, the attention slots of each of its blocks: a list of one ``(name, config)`` (BiFormer
            block) or two (DeBiFormer block: ``attn1``, ``attn2``). ``config`` omits ``dim``; ``name`` is a
            registry name, a dotted path, or a model-level attention (``"attention_lepe"``).
        mlp_ratios: block-MLP hidden ratio per stage.
        mlp: ``"conv"`` (DeBiFormer's 1×1-conv MLP with a DWConv) or ``"linear"`` (BiFormer's).
        head_norm: ``"bn"`` (BatchNorm2d, both papers) or ``"ln"``.
        num_classes: logits; 0 gives pooled features.
        in_chans: image channels.
        drop_path_rate: stochastic depth, linear from 0 to this over all blocks.
        pos_embed_kernel: kernel of the depthwise position-embedding conv before each attention.
        init: ``"default"`` (PyTorch's, what DeBiFormer's no-op ``reset_parameters`` leaves) or ``"trunc_normal"``
            (BiFormer: Linear weights trunc_normal(0.02), biases 0, LayerNorm (1, 0)).
    """

    def __init__(self, depths: Sequence[int], embed_dims: Sequence[int], slots: Sequence[Sequence[SlotSpec]],
                 mlp_ratios: Sequence[float] = (3, 3, 3, 3), mlp: str = "conv", head_norm: str = "bn",
                 num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
                 pos_embed_kernel: int = 3, init: str = "default"):
        super().__init__()
        for name, value in (("depths", depths), ("embed_dims", embed_dims), ("slots", slots),
                            ("mlp_ratios", mlp_ratios)):
            if len(value) != 4:
                raise ValueError(f"{name}={list(value)!r} is not allowed: expected 4 values, one per stage")
        if head_norm not in ("bn", "ln"):
            raise ValueError(f"head_norm={head_norm!r} is not allowed: expected 'bn' or 'ln'")
        if init not in ("default", "trunc_normal"):
            raise ValueError(f"init={init!r} is not allowed: expected 'default' or 'trunc_normal'")
        self.depths, self.embed_dims, self.num_classes = list(depths), list(embed_dims), num_classes
        self.downsample_layers = nn.ModuleList([_stem(in_chans, embed_dims[0])])
        self.downsample_layers.extend(_downsample(embed_dims[i], embed_dims[i + 1]) for i in range(3))
        n = sum(depths)
        rates = [drop_path_rate * k / max(n - 1, 1) for k in range(n)]  # linspace, also on the meta device
        self.stages = nn.ModuleList()
        for i in range(4):
            first = sum(depths[:i])
            self.stages.append(nn.Sequential(*(
                self._block(embed_dims[i], slots[i], mlp_ratios[i], mlp, rates[first + j], pos_embed_kernel)
                for j in range(depths[i])
            )))
        c = embed_dims[-1]
        self.norm = nn.BatchNorm2d(c) if head_norm == "bn" else _ChannelsLayerNorm(c, eps=1e-6)
        self.head = nn.Linear(c, num_classes) if num_classes > 0 else nn.Identity()
        if init == "trunc_normal":
            self.apply(_trunc_normal_init)

    @staticmethod
    def _block(dim: int, slots: Sequence[SlotSpec], ratio: float, mlp: str, dp: float, pe: int) -> nn.Module:
        if len(slots) == 1:
            return BiFormerBlock(dim, slots[0], ratio, mlp, dp, pe)
        if len(slots) == 2:
            return DeBiFormerBlock(dim, slots, ratio, mlp, dp, pe)
        raise ValueError(f"a stage takes 1 (BiFormer block) or 2 (DeBiFormer block) attention slots, got {len(slots)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, C3, H/32, W/32) features after the head norm."""
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, num_classes) logits."""
        return self.head(self.forward_features(x).flatten(2).mean(-1))

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay besides biases and norms (timm's optimizer factory asks)."""
        return {n for n, _ in self.named_parameters() if any(k in n for k in NO_DECAY_KEYS)}

    def attention_slots(self) -> dict[str, nn.Module]:
        """Prefix -> attention module of every slot (``stages.2.1.attn1`` ...)."""
        return {n: m for n, m in self.named_modules() if n.rsplit(".", 1)[-1] in ("attn", "attn1", "attn2")}

    def load_official(self, checkpoint: Mapping[str, Any],
                      rename: Mapping[str, str] | None = None) -> "HierarchicalViT":
        """Strictly load an official classification checkpoint (:func:`attentions.models.official.load_official`)."""
        return load_official(self, checkpoint, rename)


def _trunc_normal_init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
