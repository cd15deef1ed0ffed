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
    head                  mean over H·W ("avg" pool), Dropout(drop_rate), then Linear(C3 → num_classes)

A block is :class:`~attentions.models.blocks.BiFormerBlock` (one attention slot) or
:class:`~attentions.models.blocks.DeBiFormerBlock` (two slots), chosen by how many slots a stage lists.

Differences from official: the pooled features are taken with ``flatten(2).mean(-1)`` as BiFormer does (fvcore
counts no MACs for it, as for the published figures); ``drop_path_rate`` is honoured (DeBiFormer's training
script parses ``--drop-path`` but never passes it, so its registry values applied); a classifier dropout
(``drop_rate``, 0 in every release) sits before the head, as timm models have it.

timm's model interface (https://huggingface.co/docs/timm, "Feature Extraction" and the classifier methods every timm
model has): ``forward_features`` (the normed stage-4 map), ``forward_head(x, pre_logits)``, ``reset_classifier``,
``get_classifier``, ``feature_info`` (strides 4, 8, 16, 32), ``forward_intermediates`` and
``prune_intermediate_layers`` (what ``timm.create_model(..., features_only=True)`` builds its pyramid from), and the
training hooks of timm's optimizer factory and ``train.py``: ``group_matcher`` (layer-wise lr decay: stem, one layer
per block, head) and ``set_grad_checkpointing`` (each block recomputed in the backward pass). They need no timm: :mod:`attentions.models.timm_registry` registers the backbones with timm when it is installed.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import BiFormerBlock, DeBiFormerBlock, SlotSpec
from .official import load_official

__all__ = ["HierarchicalViT"]

NO_DECAY_KEYS = ("rpe_table", "relative_position_bias_table")
GLOBAL_POOLS = ("avg", "")


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
        num_classes: logits; 0 gives pooled features (no head).
        in_chans: image channels.
        drop_path_rate: stochastic depth, linear from 0 to this over all blocks.
        pos_embed_kernel: kernel of the depthwise position-embedding conv before each attention.
        init: ``"default"`` (PyTorch's, what DeBiFormer's no-op ``reset_parameters`` leaves) or ``"trunc_normal"``
            (BiFormer: Linear weights trunc_normal(0.02), biases 0, LayerNorm (1, 0)).
        drop_rate: dropout on the pooled features before the head (timm's ``drop_rate``).
        global_pool: ``"avg"`` (mean over H·W, both papers) or ``""`` (no pooling: ``forward_head`` returns the
            (B, C3, h, w) map; only with ``num_classes=0``, as a linear head needs pooled features).
    """

    def __init__(self, depths: Sequence[int], embed_dims: Sequence[int], slots: Sequence[Sequence[SlotSpec]],
                 mlp_ratios: Sequence[float] = (3, 3, 3, 3), mlp: str = "conv", head_norm: str = "bn",
                 num_classes: int = 1000, in_chans: int = 3, drop_path_rate: float = 0.0,
                 pos_embed_kernel: int = 3, init: str = "default", drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__()
        for name, value in (("depths", depths), ("embed_dims", embed_dims), ("slots", slots),
                            ("mlp_ratios", mlp_ratios)):
            if len(value) != 4:
                raise ValueError(f"{name}={list(value)!r} is not allowed: expected 4 values, one per stage")
        if head_norm not in ("bn", "ln"):
            raise ValueError(f"head_norm={head_norm!r} is not allowed: expected 'bn' or 'ln'")
        if init not in ("default", "trunc_normal"):
            raise ValueError(f"init={init!r} is not allowed: expected 'default' or 'trunc_normal'")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate={drop_rate!r} is not allowed: expected a probability in [0, 1)")
        _check_head(num_classes, global_pool)
        self.depths, self.embed_dims, self.num_classes = list(depths), list(embed_dims), num_classes
        self.in_chans, self.global_pool = in_chans, global_pool
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.grad_checkpointing = False
        #: one entry per stage output (timm's feature_info): channels, stride and module
        self.feature_info = [dict(num_chs=embed_dims[i], reduction=4 * 2**i, module=f"stages.{i}") for i in range(4)]
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
        self.head_drop = nn.Dropout(drop_rate)  # no parameters: state dicts keep the official keys
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
            x = self._run_stage(stage, down(x))
        return self.norm(x)

    def _run_stage(self, stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """The blocks of one stage; with gradient checkpointing each block's activations are recomputed in the
        backward pass instead of kept (only while autograd records: inference is unchanged)."""
        if not (self.grad_checkpointing and torch.is_grad_enabled()):
            return stage(x)
        for block in stage:
            # non-reentrant: gradients reach parameters even when x needs none; the RNG state (DropPath) is replayed
            x = checkpoint(block, x, use_reentrant=False)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, C3, h, w) features -> (B, num_classes) logits, or the pooled (B, C3) features if ``pre_logits``."""
        if self.global_pool == "avg":
            x = x.flatten(2).mean(-1)  # BiFormer's pooling (fvcore counts no MACs for it, as for the papers)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(x))

    # -- timm's training hooks ---------------------------------------------------------------------------------
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for timm's layer-wise lr decay, from input to output (the patterns of timm's
        hierarchical models, e.g. ConvNeXt): the stem; then one layer per block (``coarse``: per stage), the
        downsampling conv before a stage going with its first block; the head norm with the last block (timm's
        ``99999`` = "same layer as the previous"); the unmatched head last, at lr scale 1.0.
        """
        stages = [(r"^(?:downsample_layers|stages)\.(\d+)\.", None)] if coarse else [
            (r"^downsample_layers\.(\d+)\.", (0,)),
            (r"^stages\.(\d+)\.(\d+)\.", None),
        ]
        return dict(stem=r"^downsample_layers\.0\.", blocks=stages + [(r"^norm\.", (99999,))])

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of keeping its activations (timm's
        ``--grad-checkpointing``): the same gradients for less peak memory, at the cost of a second forward."""
        self.grad_checkpointing = bool(enable)

    # -- timm's classifier and feature-extraction interface ----------------------------------------------------
    def get_classifier(self) -> nn.Module:
        """The final classifier (``head``: a Linear, or Identity with ``num_classes=0``)."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head by a freshly initialised ``Linear(C3, num_classes)`` (Identity for 0); ``global_pool``
        (``"avg"`` or ``""``) changes the pooling when given."""
        pool = self.global_pool if global_pool is None else global_pool
        _check_head(num_classes, pool)
        self.num_classes, self.global_pool = num_classes, pool
        ref = next(self.norm.parameters(), None)
        if ref is None:
            ref = next(self.parameters())
        self.head = (nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
                     if num_classes > 0 else nn.Identity())

    def _take_indices(self, indices: Optional[Union[int, Sequence[int]]]) -> Tuple[List[int], int]:
        """Stage indices to return: None = all, an int n = the last n, a sequence = those (negative from the end)."""
        n = len(self.stages)
        if indices is None:
            indices = n
        if isinstance(indices, int):
            if not 0 < indices <= n:
                raise ValueError(f"indices={indices} is not allowed: expected the last n stages, 1 <= n <= {n}")
            take = list(range(n - indices, n))
        else:
            take = [i + n if i < 0 else i for i in indices]
            bad = [i for i, t in zip(indices, take) if not 0 <= t < n]
            if bad or not take:
                raise ValueError(f"indices={list(indices)!r} is not allowed: expected stage indices in "
                                 f"[-{n}, {n - 1}] (the model has {n} stages)")
        return take, max(take)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, Sequence[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs (B, Ci, H/2^(i+2), W/2^(i+2)) for the stages in ``indices`` (timm's signature).

        Args:
            indices: None (all four), n (the last n) or stage indices.
            norm: apply the head norm to the stage-4 output (the only stage it is sized for).
            stop_early: run no stage after the last one asked for.
            output_fmt: ``"NCHW"`` only.
            intermediates_only: return only the list (else ``(final features, list)``).
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r} is not allowed: expected 'NCHW'")
        take, last_taken = self._take_indices(indices)
        run = last_taken + 1 if stop_early else len(self.stages)
        last = len(self.embed_dims) - 1
        intermediates = []
        for i in range(run):
            x = self._run_stage(self.stages[i], self.downsample_layers[i](x))
            if i in take:
                intermediates.append(self.norm(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        return (self.norm(x) if run - 1 == last else x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, Sequence[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages after the last of ``indices`` (and the head norm / head); returns the absolute indices.

        ``timm.create_model(..., features_only=True)`` calls this; the pruned model only serves
        :meth:`forward_intermediates`.
        """
        take, last_taken = self._take_indices(indices)
        self.stages = self.stages[:last_taken + 1]
        self.downsample_layers = self.downsample_layers[:last_taken + 1]
        if prune_norm or last_taken < len(self.embed_dims) - 1:
            self.norm = nn.Identity()  # sized for stage 4 only
        if prune_head:
            self.reset_classifier(0, "")
        return take

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


def _check_head(num_classes: int, global_pool: str) -> None:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool={global_pool!r} is not allowed: expected 'avg' (mean over H·W) or '' "
                         "(no pooling, with num_classes=0)")
    if num_classes < 0:
        raise ValueError(f"num_classes={num_classes!r} is not allowed: expected an integer >= 0 (0: no head)")
    if global_pool == "" and num_classes > 0:
        raise ValueError(f"global_pool='' (no pooling) is not allowed with num_classes={num_classes}: the linear "
                         "head needs pooled features; pass num_classes=0 for the unpooled map or global_pool='avg'")


def _trunc_normal_init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
