"""Name -> model entrypoint: the backbone registry (timm's ``register_model`` / ``create_model`` pattern).

An entrypoint is a function returning an ``nn.Module``; its name is the model name. ``create_model`` drops keyword
arguments that are ``None``, so command-line flags that default to ``None`` override a preset only when given.
``pretrained=False`` is accepted and ignored; ``pretrained=True`` raises :class:`NoPretrainedWeightsError`: no
weights are hosted anywhere, and an official checkpoint is loaded from a file (``from_official``, or timm's
``pretrained_cfg_overlay=dict(file=...)``, see :mod:`attentions.models.timm_registry`).
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, TypeVar

from torch import nn

from ..suggest import did_you_mean

__all__ = ["register_model", "create_model", "list_models", "UnknownModelError", "NoPretrainedWeightsError",
           "no_weights_message"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
F = TypeVar("F", bound=Callable[..., nn.Module])


class UnknownModelError(ValueError):
    """No backbone of that name is registered."""


class NoPretrainedWeightsError(RuntimeError):
    """``pretrained=True`` without a checkpoint file: there is nothing to download (a RuntimeError, as timm's own)."""


#: presets with released ImageNet-1k checkpoints (DeBiFormer: maclong01/DeBiFormer; BiFormer: rayleizhu/BiFormer)
OFFICIAL_WEIGHTS = ("debiformer_t", "debiformer_s", "debiformer_b", "biformer_t", "biformer_s", "biformer_b")


def no_weights_message(name: str) -> str:
    """Why ``pretrained=True`` cannot work for ``name`` and how to load a checkpoint file instead."""
    if name in OFFICIAL_WEIGHTS:
        what = ("the official checkpoints are not hosted for download; download the official checkpoint of "
                f"{name} yourself and pass its path")
    else:
        what = (f"{name} has no released weights; pass a checkpoint of your own (this model's state_dict, or a "
                "training checkpoint holding it under 'model' / 'state_dict')")
    return (f"{name}: pretrained=True, but no pretrained weights can be downloaded: {what}: "
            f"timm.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict(file='/path/to/ckpt.pth')) "
            f"or attentions.models.from_official({name!r}, torch.load('/path/to/ckpt.pth')); "
            "or use pretrained=False for random initialisation")


def register_model(fn: F) -> F:
    """Decorator: register ``fn`` under its function name; a duplicate name raises."""
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"model {name!r} is already registered to {_MODELS[name].__module__}")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered model names, optionally filtered by a shell-style pattern (``'debiformer_t*'``)."""
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; keyword arguments that are ``None`` are dropped.

    Raises:
        UnknownModelError: no model of that name (with the closest name).
        NoPretrainedWeightsError: ``pretrained=True`` (load a checkpoint file with ``from_official`` instead).
    """
    if name not in _MODELS:
        raise UnknownModelError(f"unknown model {name!r}{did_you_mean(name, _MODELS)} "
                                f"(registered: {', '.join(sorted(_MODELS))})")
    if kwargs.pop("pretrained", False):
        raise NoPretrainedWeightsError(no_weights_message(name))
    return _MODELS[name](**{k: v for k, v in kwargs.items() if v is not None})
