"""Official BiFormer / DeBiFormer classification checkpoints -> our backbones.

The backbone uses the official module names (``downsample_layers``, ``stages.<i>.<j>``, ``pos_embed``/``attn``/
``mlp`` in BiFormer blocks, ``pos_embed1``/``attn1``/``mlp1``/``pos_embed2``/``attn2``/``mlp2`` and ``norm1..4`` in
DeBiFormer blocks, ``norm``, ``head``), so every key outside the attention slots is taken as it is. Inside a slot
the keys go through that attention's own converter (``convert_official`` of its class, the contract of
``shared/design/official-state-dicts.md``); model-level attentions (``AttentionLePE``) use the official names.

Certainty: the BiFormer names are read from rayleizhu/BiFormer ``models/biformer.py``. The DeBiFormer block's
sub-module names (``pos_embed1``, ``norm1``..``norm4``, ``mlp1``/``mlp2``) follow the design spec's description of
``classification/debiformer.py`` and were not checked against a released checkpoint; the attention keys were.
If a checkpoint names them otherwise, ``rename`` maps key prefixes before loading, and a mismatch is reported
key by key (missing / unexpected / wrong shape), never loaded partially.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import nn

from ..base import OfficialStateDictError

__all__ = ["unwrap_checkpoint", "convert_official", "checked_official", "load_official"]

_CONTAINER_KEYS = ("model", "state_dict", "model_state_dict")


def unwrap_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint (``{'model': ...}`` as the official scripts save it), without
    a DDP ``module.`` prefix."""
    sd: Any = checkpoint
    for key in _CONTAINER_KEYS:
        if isinstance(sd, Mapping) and isinstance(sd.get(key), Mapping):
            sd = sd[key]
            break
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _rename(sd: dict[str, torch.Tensor], rename: Mapping[str, str] | None) -> dict[str, torch.Tensor]:
    if not rename:
        return sd
    out = {}
    for key, value in sd.items():
        for old, new in rename.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def convert_official(model: nn.Module, checkpoint: Mapping[str, Any],
                     rename: Mapping[str, str] | None = None) -> dict[str, torch.Tensor]:
    """An official checkpoint as a state dict of ``model`` (names and shapes of ours; nothing loaded yet).

    Args:
        model: a :class:`~attentions.models.hierarchical.HierarchicalViT`.
        checkpoint: the official state dict, or a checkpoint holding it under ``model`` / ``state_dict``.
        rename: optional key-prefix map applied first (``{"stages.0.0.pos_embed.": "stages.0.0.pos_embed1."}``).
    """
    sd = _rename(unwrap_checkpoint(checkpoint), rename)
    slots = model.attention_slots()
    out: dict[str, torch.Tensor] = {}
    claimed: set[str] = set()
    for prefix, module in slots.items():
        head = prefix + "."
        sub = {k[len(head):]: v for k, v in sd.items() if k.startswith(head)}
        claimed.update(head + k for k in sub)
        converter = getattr(type(module), "convert_official", None)
        if converter is not None and hasattr(module, "config"):
            sub = converter(sub, module.config)
        out.update({head + k: v for k, v in sub.items()})
    out.update({k: v for k, v in sd.items() if k not in claimed})
    return out


def checked_official(model: nn.Module, checkpoint: Mapping[str, Any], rename: Mapping[str, str] | None = None,
                     exempt: Iterable[str] = ()) -> dict[str, torch.Tensor]:
    """``checkpoint`` converted to ``model``'s state-dict layout, after checking every key and shape; any mismatch
    raises :class:`attentions.OfficialStateDictError` listing the missing, unexpected and wrongly shaped keys.

    BatchNorm ``num_batches_tracked`` counters (absent from some older checkpoints) are the only keys that may be
    missing: they do not affect the forward pass and keep the model's own values. Keys in ``exempt`` are not
    checked (timm's loader adapts a resized head or stem after this).
    """
    converted = convert_official(model, checkpoint, rename)
    own = model.state_dict()
    for key in own:
        if key.endswith("num_batches_tracked") and key not in converted:
            converted[key] = own[key]
    exempt = set(exempt)
    missing = sorted(set(own) - set(converted) - exempt)
    unexpected = sorted(set(converted) - set(own) - exempt)
    wrong = sorted(f"{k}: got {tuple(converted[k].shape)}, expected {tuple(own[k].shape)}"
                   for k in (set(own) & set(converted)) - exempt if tuple(converted[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        raise OfficialStateDictError(type(model).__name__, missing, unexpected, wrong)
    return converted


def load_official(model: nn.Module, checkpoint: Mapping[str, Any],
                  rename: Mapping[str, str] | None = None) -> nn.Module:
    """Convert and strictly load an official checkpoint into ``model`` (checked by :func:`checked_official`)."""
    model.load_state_dict(checked_official(model, checkpoint, rename), strict=True)
    return model
