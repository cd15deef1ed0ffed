"""Backbones built from the attention registry: DeBiFormer/BiFormer presets and attention-swap models.

::

    from attentions import models
    models.list_models("debiformer*")
    net = models.create_model("debiformer_t")                       # official DeBiFormer-T
    net = models.create_model("debiformer_t_swap_dat")              # same macro design, DAT++ in every slot
    net = models.create_model("swap", attention="agent", macro="tiny", img_size=64, num_classes=8)
    net = models.from_official("debiformer_s", torch.load("debiformer_small.pth"))

Models take (B, 3, H, W) images (any size; region attentions pad) and return (B, num_classes) logits. They build
every attention through ``attentions.build(name, **config)``, never from the classes.

With timm installed, importing this package also registers every preset in timm's registry
(:mod:`attentions.models.timm_registry`)::

    import attentions.models, timm
    net = timm.create_model("debiformer_t", num_classes=10, drop_path_rate=0.1)
"""
from __future__ import annotations

import importlib.util
from typing import Any, Mapping

from torch import nn

from . import presets as _presets  # noqa: F401  (registers the entrypoints)
from ._registry import NoPretrainedWeightsError, UnknownModelError, create_model, list_models, register_model
from .blocks import AttentionLePE
from .hierarchical import HierarchicalViT
from .swap import MACROS, SWAP_ATTENTIONS, Macro, slot_config, stage_grids

__all__ = ["create_model", "list_models", "register_model", "from_official", "UnknownModelError",
           "NoPretrainedWeightsError", "HierarchicalViT", "AttentionLePE", "MACROS", "Macro", "SWAP_ATTENTIONS",
           "slot_config", "stage_grids"]

# timm is optional (the ``accuracy`` extra): without it the backbones are ours only; a broken timm install still
# raises here rather than silently leaving timm.create_model("debiformer_t") unknown
if importlib.util.find_spec("timm") is not None:
    from . import timm_registry as _timm_registry  # noqa: F401  (registers the presets with timm)


def from_official(name: str, checkpoint: Mapping[str, Any], rename: Mapping[str, str] | None = None,
                  **kwargs: Any) -> nn.Module:
    """Build model ``name`` (with ``kwargs``) and strictly load an official classification checkpoint into it.

    Args:
        name: a registered model, e.g. ``debiformer_t`` or ``biformer_s``.
        checkpoint: the official state dict, or a checkpoint dict holding it under ``model`` / ``state_dict``.
        rename: key-prefix map applied before loading, for checkpoints whose names differ from the documented ones.

    Raises:
        attentions.OfficialStateDictError: listing missing, unexpected and wrongly shaped keys.
    """
    return create_model(name, **kwargs).load_official(checkpoint, rename)
