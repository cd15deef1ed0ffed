"""The backbones as timm models: registered in timm's registry when :mod:`attentions.models` is imported.

::

    import attentions.models, timm
    m = timm.create_model("debiformer_t", num_classes=10, drop_path_rate=0.1)
    m = timm.create_model("biformer_s", pretrained=True, pretrained_cfg_overlay=dict(file="biformer_small.pth"))
    f = timm.create_model("debiformer_t", features_only=True)          # 4 NCHW maps, strides 4, 8, 16, 32

Every name of :func:`attentions.models.list_models` except the generic ``swap`` (its ``attention`` argument has no
default) becomes a timm entrypoint that builds through timm's ``build_model_with_cfg``, as timm's own models do
(timm docs, "Adding a model" / ``timm/models/convnext.py``), so the model gets a ``pretrained_cfg``, timm's
``features_only`` / ``out_indices`` wrapper (``feature_cls='getter'``, over
:meth:`~attentions.models.hierarchical.HierarchicalViT.forward_intermediates`) and timm's pretrained loading.

Pretrained weights: nothing is hosted (``url`` is empty). ``pretrained=True`` takes an official classification
checkpoint through the ``file`` hook of the config (``pretrained_cfg_overlay=dict(file=path)``, or
``state_dict=...``); timm reads the file and :func:`checkpoint_filter_fn` converts it as
:func:`attentions.models.from_official` does, reporting missing, unexpected and wrongly shaped keys. timm then
adapts what a changed ``num_classes`` or ``in_chans`` requires (drops the head, sums the stem weights).
``pretrained=True`` with no file raises :class:`~attentions.models._registry.NoPretrainedWeightsError`.

Keyword arguments go to the entrypoint of :mod:`attentions.models.presets` (``num_classes``, ``drop_rate``,
``drop_path_rate``, ``global_pool``, ``in_chans``, ``img_size``, ``attn_overrides``, ...), plus timm's ``device`` and
``dtype``.

Evaluation config: ImageNet mean/std, bicubic resize to 224 / 0.875 and a 224² centre crop, the DeiT evaluation
transform the BiFormer training code (DeiT-based, ``configs/train_args.yaml``) and DeBiFormer's (derived from it) use.
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable, Mapping

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, resolve_pretrained_cfg
from timm.models import register_model as timm_register_model
from torch import nn

from ._registry import OFFICIAL_WEIGHTS, NoPretrainedWeightsError, create_model, list_models, no_weights_message
from .official import checked_official

__all__ = ["TIMM_MODELS", "checkpoint_filter_fn", "default_cfgs"]

FIRST_CONV = "downsample_layers.0.0"  # the stem's first conv: timm adapts it for another in_chans
CLASSIFIER = "head"

#: model names registered in timm: every preset; ``swap`` needs an ``attention`` and stays in our registry only
TIMM_MODELS = tuple(n for n in list_models() if n != "swap")

_PAPERS = {
    "debiformer": ("arXiv:2410.08582", "DeBiFormer: Vision Transformer with Deformable Agent Bi-level Routing "
                   "Attention", "https://github.com/maclong01/DeBiFormer"),
    "biformer": ("arXiv:2303.08810", "BiFormer: Vision Transformer with Bi-Level Routing Attention",
                 "https://github.com/rayleizhu/BiFormer"),
}


def _cfg(name: str) -> dict[str, Any]:
    paper_id, paper, origin = _PAPERS["debiformer" if name.startswith("debiformer") else "biformer"]
    if name in OFFICIAL_WEIGHTS:
        notes = ("no hosted weights: pass the official checkpoint with pretrained_cfg_overlay=dict(file=...)",)
    else:
        notes = ("attention-swap preset of attnbench: no released weights",)
    return dict(
        url="", num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
        interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, fixed_input_size=False,
        first_conv=FIRST_CONV, classifier=CLASSIFIER, paper_ids=paper_id, paper_name=paper, origin_url=origin,
        notes=notes,
    )


# timm's register_model reads the cfgs from this module attribute, so it is defined before the entrypoints
default_cfgs = generate_default_cfgs({name: _cfg(name) for name in TIMM_MODELS})


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    """An official checkpoint (as timm read it) -> ``model``'s state dict, converted as ``from_official`` does.

    Keys and shapes are checked by :func:`attentions.models.official.checked_official`, except the tensors timm adapts
    next: the head when ``num_classes`` differs from the checkpoint's 1000, the stem's first conv when ``in_chans``
    differs from 3. BatchNorm ``num_batches_tracked`` counters may be missing (they keep the model's values).

    Raises:
        attentions.OfficialStateDictError: listing missing, unexpected and wrongly shaped keys.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    adapted = set()
    if getattr(model, "num_classes", None) != cfg.get("num_classes", 1000):
        adapted |= {f"{CLASSIFIER}.weight", f"{CLASSIFIER}.bias"}
    if getattr(model, "in_chans", 3) != (cfg.get("input_size") or (3,))[0]:
        adapted.add(f"{FIRST_CONV}.weight")
    return checked_official(model, state_dict, exempt=adapted)


def _build(name: str, device: Any = None, dtype: Any = None, **kwargs: Any) -> nn.Module:
    """Our entrypoint ``name``, built on ``device`` (e.g. ``"meta"``) and cast to ``dtype`` when given.

    timm passes ``img_size`` as an int or an (h, w) pair; the presets take the side of a square input.
    """
    size = kwargs.get("img_size")
    if isinstance(size, (tuple, list)) and len(size) == 2 and size[0] == size[1]:
        kwargs["img_size"] = int(size[0])
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = create_model(name, **kwargs)
    return model.to(dtype=dtype) if dtype is not None else model


def _check_weight_source(name: str, kwargs: Mapping[str, Any]) -> None:
    """``pretrained=True`` needs a checkpoint: a clear error when none is given or the file does not exist."""
    cfg = resolve_pretrained_cfg(name, pretrained_cfg=kwargs.get("pretrained_cfg"),
                                 pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"))
    if cfg.state_dict is None and not (cfg.file or cfg.url or cfg.hf_hub_id):
        raise NoPretrainedWeightsError(no_weights_message(name))
    if cfg.state_dict is None and cfg.file and not os.path.isfile(cfg.file):
        raise FileNotFoundError(f"{name}: pretrained_cfg_overlay file={cfg.file!r} does not exist; expected the "
                                "path of a checkpoint (.pth) holding the model's state_dict")


def create_timm_model(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build preset ``name`` through timm's ``build_model_with_cfg`` (what each registered entrypoint calls)."""
    if pretrained:
        _check_weight_source(name, kwargs)
    return build_model_with_cfg(
        functools.partial(_build, name), name, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"),  # fresh dict: timm pops from it
        **kwargs,
    )


def _entrypoint(name: str) -> Callable[..., nn.Module]:
    def entry(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create_timm_model(name, pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name  # timm registers an entrypoint under its function name
    entry.__doc__ = f"timm entrypoint of :func:`attentions.models.presets.{name}`."
    return entry


for _name in TIMM_MODELS:
    globals()[_name] = timm_register_model(_entrypoint(_name))
