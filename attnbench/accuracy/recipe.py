"""The training recipe: DeiT-style, as BiFormer and DeBiFormer train, built from timm's utilities.

AdamW (timm ``create_optimizer_v2``: no weight decay on biases, norms and the models' ``no_weight_decay()``
tables), cosine learning rate with linear warm-up stepped every update (``timm.scheduler.CosineLRScheduler``),
label smoothing (``timm.loss.LabelSmoothingCrossEntropy``) or, with mixup/cutmix (``timm.data.Mixup``), soft-target
cross-entropy (``timm.loss.SoftTargetCrossEntropy``), RandAugment and random erasing through
``timm.data.create_transform``, gradient-norm clipping, and AMP (float16 autocast with a gradient scaler, as the
official scripts) on CUDA. The learning rate is scaled linearly with the total batch: ``lr · total / lr_base_batch``.

The official ImageNet-1K recipe (DeBiFormer §4: 300 epochs, lr 5e-4 per 512, wd 0.05-0.1, 20 warm-up epochs,
clip 5, smoothing 0.1, mixup 0.8, cutmix 1.0, ``rand-m9-mstd0.5-inc1``, erasing 0.25) is :data:`PAPER_RECIPE`;
a subset run keeps it and shortens the schedule.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, Optional

import torch
from torch import nn

from ..core.validation import check_dataclass

__all__ = ["Recipe", "PAPER_RECIPE", "make_optimizer", "make_scheduler", "make_mixup", "make_criterion",
           "scaled_lr"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Training hyperparameters (per-process batch; the lr is for a total batch of ``lr_base_batch``).

    Args:
        epochs, batch_size: schedule length and per-process batch.
        lr, lr_base_batch: peak lr at a total batch of ``lr_base_batch`` (0: use ``lr`` as it is).
        weight_decay, warmup_epochs, warmup_lr, min_lr: AdamW decay and the cosine schedule.
        label_smoothing, mixup, cutmix: targets (mixup/cutmix alphas; 0 turns each off).
        augment, randaugment, reprob: ``"imagenet"`` (RandomResizedCrop + flip) or ``"none"`` (resize only),
            a timm RandAugment string or None, random-erasing probability.
        clip_grad: max gradient norm (None: no clipping).
        drop_path: stochastic-depth rate of the backbone (None: the model preset's).
        amp, amp_dtype: autocast on CUDA (``"float16"`` with a gradient scaler, or ``"bfloat16"``); ignored on CPU.
        seed: seeds the weights, the data order and every random draw of an epoch.
        num_workers: data-loading processes per training process.
        eval_every: evaluate every N epochs (always after the last).
    """

    epochs: int = 100
    batch_size: int = 128
    lr: float = 5e-4
    lr_base_batch: int = 512
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    label_smoothing: float = 0.1
    mixup: float = 0.8
    cutmix: float = 1.0
    augment: str = "imagenet"
    randaugment: Optional[str] = "rand-m9-mstd0.5-inc1"
    reprob: float = 0.25
    clip_grad: Optional[float] = 5.0
    drop_path: Optional[float] = None
    amp: bool = True
    amp_dtype: str = "float16"
    seed: int = 0
    num_workers: int = 4
    eval_every: int = 1

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "recipe") -> "Recipe":
        """Build from a mapping; unknown keys and wrongly typed values raise ``ValueError`` naming them."""
        hints = check_fields(cls, values, where)
        recipe = cls(**{k: (float(v) if hints[k] in (float, Optional[float]) and v is not None else v)
                        for k, v in values.items()})
        recipe.validate(where)
        return recipe

    def validate(self, where: str = "recipe") -> None:
        checks = [
            (self.epochs >= 1, "epochs", "an integer >= 1"), (self.batch_size >= 1, "batch_size", "an integer >= 1"),
            (self.lr > 0, "lr", "a positive number"), (self.warmup_epochs >= 0, "warmup_epochs", ">= 0"),
            (self.augment in ("imagenet", "none"), "augment", "'imagenet' or 'none'"),
            (self.amp_dtype in ("float16", "bfloat16"), "amp_dtype", "'float16' or 'bfloat16'"),
            (not self.uses_mixup or self.batch_size % 2 == 0, "batch_size", "an even number with mixup/cutmix"),
            (self.eval_every >= 1, "eval_every", "an integer >= 1"),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise ValueError(f"{where}.{key}={getattr(self, key)!r} is not allowed: expected {expected}")

    @property
    def uses_mixup(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0






def check_fields(cls: type, values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The type hints of dataclass ``cls``, after checking ``values`` against its fields with the one validation
    engine (:func:`attnbench.core.validation.check_dataclass`: unknown keys, types; errors name ``where`` and the key)."""
    check_dataclass(cls, values, where)
    return typing.get_type_hints(cls)


#: the official ImageNet-1K recipe of DeBiFormer (300 epochs on 8 GPUs at 128 images each)
PAPER_RECIPE = Recipe(epochs=300, batch_size=128, lr=5e-4, lr_base_batch=512, weight_decay=0.05,
                      warmup_epochs=20, label_smoothing=0.1, mixup=0.8, cutmix=1.0,
                      randaugment="rand-m9-mstd0.5-inc1", reprob=0.25, clip_grad=5.0)


def scaled_lr(recipe: Recipe, world_size: int) -> float:
    """Peak lr for the total batch ``batch_size · world_size`` (linear scaling rule)."""
    if recipe.lr_base_batch <= 0:
        return recipe.lr
    return recipe.lr * recipe.batch_size * world_size / recipe.lr_base_batch


def make_optimizer(model: nn.Module, recipe: Recipe, world_size: int = 1) -> torch.optim.Optimizer:
    """AdamW through timm (decay off for 1-D params, biases and ``model.no_weight_decay()``)."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, opt="adamw", lr=scaled_lr(recipe, world_size),
                               weight_decay=recipe.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    """Cosine to ``min_lr`` over all updates, linear warm-up from ``warmup_lr``; call ``step_update(n)``."""
    from timm.scheduler import CosineLRScheduler

    total = recipe.epochs * steps_per_epoch
    return CosineLRScheduler(optimizer, t_initial=total, lr_min=recipe.min_lr,
                             warmup_t=int(recipe.warmup_epochs * steps_per_epoch), warmup_lr_init=recipe.warmup_lr,
                             t_in_epochs=False)


def make_mixup(recipe: Recipe, num_classes: int):
    """timm's Mixup/CutMix (with label smoothing folded into the soft targets), or None when both are off."""
    if not recipe.uses_mixup:
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, label_smoothing=recipe.label_smoothing,
                 num_classes=num_classes)


def make_criterion(recipe: Recipe) -> nn.Module:
    """Soft-target CE with mixup; else label-smoothing CE; else plain CE."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if recipe.uses_mixup:
        return SoftTargetCrossEntropy()
    if recipe.label_smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=recipe.label_smoothing)
    return nn.CrossEntropyLoss()
