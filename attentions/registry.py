"""Name -> attention class: the zoo's registry.

Three ways in, one lookup:

* the built-in mechanisms, registered with :func:`register` when their module is imported;
* third-party packages, through the ``attentions`` entry-point group
  (``[project.entry-points.attentions] my_attn = "my_pkg.attn:MyAttention"``);
* dotted paths ``package.module:Class``, so a user's own attention joins a sweep without registering at all.

A third-party class only has to follow the shape contract: keyword constructor, ``forward(x)`` on (B, H, W, C).
"""
from __future__ import annotations

import fnmatch
import importlib
from importlib import metadata
from typing import Any, Callable, Mapping, TypeVar

import torch
from torch import nn

from .suggest import did_you_mean

__all__ = ["register", "available", "resolve", "build", "from_official", "UnknownAttentionError"]

_REGISTRY: dict[str, type[nn.Module]] = {}
_BUILTINS = ("mhsa", "bra", "dbra", "dat", "agent")
_ENTRY_POINT_GROUP = "attentions"
_loaded = False

T = TypeVar("T", bound=type)


class UnknownAttentionError(ValueError):
    """No attention of that name is registered, found by entry point, or importable as a dotted path."""


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make ``cls`` buildable as ``attentions.build(name, ...)``. A duplicate name raises."""

    def wrap(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"attention {name!r} is already registered to {_REGISTRY[name].__qualname__}")
        _REGISTRY[name] = cls
        cls.name = name
        config_cls = getattr(cls, "Config", None)
        if config_cls is not None:
            config_cls.mechanism = name
        return cls

    return wrap


def _load() -> None:
    """Import the built-in mechanisms and the entry points, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BUILTINS:
        importlib.import_module(f"attentions.{mod}")
    for ep in metadata.entry_points(group=_ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            _REGISTRY[ep.name] = _LazyEntryPoint(ep)  # type: ignore[assignment]


class _LazyEntryPoint:
    """Defers importing a third-party attention until it is built."""

    def __init__(self, ep: metadata.EntryPoint):
        self.ep = ep

    def load(self) -> type[nn.Module]:
        return self.ep.load()


def available(pattern: str | None = None) -> list[str]:
    """Sorted registered names (built-in and entry points), optionally filtered by a shell-style pattern."""
    _load()
    names = sorted(_REGISTRY)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def _import_dotted(path: str) -> type[nn.Module]:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UnknownAttentionError(f"cannot import module {module_name!r} of attention {path!r}: {e}") from e
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise UnknownAttentionError(f"module {module_name!r} has no attribute {attr!r} (from {path!r})") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise UnknownAttentionError(f"{path!r} is not a torch.nn.Module subclass")
    return cls


def resolve(name: str) -> type[nn.Module]:
    """The class behind a registry name or a ``package.module:Class`` path."""
    if ":" in name:
        return _import_dotted(name)
    _load()
    entry = _REGISTRY.get(name)
    if entry is None:
        raise UnknownAttentionError(
            f"unknown attention {name!r}{did_you_mean(name, _REGISTRY)} (registered: {', '.join(sorted(_REGISTRY))}; "
            "or give a dotted path 'package.module:Class')"
        )
    if isinstance(entry, _LazyEntryPoint):
        entry = _REGISTRY[name] = entry.load()
    return entry


def build(name: str, **config: Any) -> nn.Module:
    """Build the attention ``name`` with its hyperparameters as keywords."""
    return resolve(name)(**config)


def from_official(name: str, state_dict: Mapping[str, torch.Tensor], **config: Any) -> nn.Module:
    """Build ``name`` with ``config`` and strictly load an official module's ``state_dict`` into it.

    Official parameter names and shapes (``shared/design/official-state-dicts.md``) are mapped to ours by the
    class's ``convert_official``; a mismatch raises :class:`attentions.base.OfficialStateDictError` listing the
    missing, unexpected and wrongly shaped keys.
    """
    module = build(name, **config)
    if not hasattr(module, "load_official"):
        raise TypeError(f"attention {name!r} ({type(module).__qualname__}) has no official-weights converter")
    return module.load_official(state_dict)
