"""Run a backbone on an image under :func:`attentions.inspect` and sort the records by stage; effective receptive fields.

Backbones are :class:`attentions.models.HierarchicalViT` (``downsample_layers``, ``stages``); attention slots are
named ``stages.<s>.<block>.attn`` (BiFormer blocks) or ``attn1``/``attn2`` (DeBiFormer blocks).
"""
from __future__ import annotations

import re
from typing import Literal

import numpy as np
import torch

import attentions
from attentions.inspect import Record

from ..core.errors import UserError

__all__ = ["capture", "erf", "num_stages"]

_SLOT = re.compile(r"^stages\.(\d+)\.(\d+)\.(attn\d?)$")


def num_stages(model) -> int:
    if not hasattr(model, "stages") or not hasattr(model, "downsample_layers"):
        raise UserError(f"viz: {type(model).__name__} is not a staged backbone (expected attentions.models "
                        "HierarchicalViT: downsample_layers and stages)")
    return len(model.stages)


def capture(model, image: torch.Tensor, query: tuple[float, float],
            slot: Literal["first", "last"] = "last") -> dict[int, dict[str, Record]]:
    """stage -> mechanism -> the record of the stage's first or last slot holding that mechanism.

    Args:
        image: (3, S, S) normalised image.
        query: (y, x) fractions of the image.
    """
    num_stages(model)
    try:
        with torch.no_grad(), attentions.inspect(model, query=query) as rec:
            model(image.unsqueeze(0))
    except ValueError as e:  # an input size the architecture does not take (DBRA grid constraints, ...)
        raise UserError(f"viz: the model cannot run on a {image.shape[-1]}² image: {e}") from e
    out: dict[int, dict[str, Record]] = {}
    for r in rec.records:
        m = _SLOT.match(r.module)
        if m is None:
            continue
        per_stage = out.setdefault(int(m.group(1)), {})
        if slot == "last" or r.mechanism not in per_stage:
            per_stage[r.mechanism] = r
    return out


def erf(model, images: torch.Tensor, stage: int) -> np.ndarray:
    """Effective receptive field of stage ``stage``'s centre output, averaged over ``images`` (N, 3, S, S).

    As the ERF analyses of RepLKNet (Ding et al., CVPR 2022) and the DAT/BiFormer papers: the gradient of the
    channel-summed output at the centre token of the stage's feature map with respect to the input pixels,
    absolute value summed over colour channels, averaged over images, then divided by its maximum ((S, S) in
    [0, 1]). The model is in eval mode (BatchNorm uses its running statistics, so images do not interact).
    """
    num_stages(model)
    x = images.clone().requires_grad_(True)
    h = x
    with torch.enable_grad():
        for i in range(stage + 1):
            h = model.stages[i](model.downsample_layers[i](h))
        centre = h[:, :, h.shape[2] // 2, h.shape[3] // 2].sum()
        (grad,) = torch.autograd.grad(centre, x)
    field = grad.abs().sum(1).mean(0)
    return (field / field.max().clamp_min(1e-30)).numpy()
