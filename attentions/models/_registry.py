"""Name -> model entrypoint: the backbone registry (timm's ``register_model`` / ``create_model`` pattern).

An entrypoint is a function returning an ``nn.Module``; its name is the model name. ``create_model`` drops keyword
arguments that are ``None``, so command-line flags that default to ``None`` override a preset only when given.
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, TypeVar

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "UnknownModelError"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
F = TypeVar("F", bound=Callable[..., nn.Module])


class UnknownModelError(ValueError):
    """No backbone of that name is registered."""


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
    """Build the registered model ``name``; keyword arguments that are ``None`` are dropped."""
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint} (registered: {', '.join(sorted(_MODELS))})")
    return _MODELS[name](**{k: v for k, v in kwargs.items() if v is not None})
