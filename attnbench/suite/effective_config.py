"""The arguments an attention really runs with, and the suite defaults it silently does not take.

A suite's ``defaults`` go to every attention that accepts the key (:mod:`attnbench.suite.checks`). A user's module
whose constructor spells a parameter differently (``heads`` where the suite says ``num_heads``) then runs with its
own default, and the comparison is unequal without a word. :func:`unaccepted_defaults` finds such defaults, so
that loading the suite warns once per attention, naming them and the parameter the module may mean; the rows
record each attention's **effective** arguments (``effective_config``: the given config with its constructor's
or ``Config``'s defaults filled in, :func:`effective_config`), since ``config`` holds only what the suite gave.

Which defaults are worth a warning: every one an attention given by dotted path does not take, and, for a
registry attention, those that are fields of every attention's config (``dim``, ``num_heads``: they size the
module); a registry attention not taking a region setting (``auto_pad`` for ``mhsa``) is by design.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Optional

from ..core.hints import did_you_mean

__all__ = ["signature_defaults", "effective_config", "unaccepted_defaults", "unaccepted_warning"]


def signature_defaults(cls: type) -> dict[str, Any]:
    """Parameter -> default of ``cls``: its ``Config`` dataclass fields, else its constructor's keyword defaults."""
    config_cls = getattr(cls, "Config", None)
    if config_cls is not None and dataclasses.is_dataclass(config_cls):
        out = {}
        for f in dataclasses.fields(config_cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
        return out
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params
            if p.name != "self" and p.default is not p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def effective_config(module: Any, given: dict[str, Any]) -> dict[str, Any]:
    """What the module was built with: its resolved config (``module.config.as_dict()``) when it has one, else
    the constructor's defaults overridden by ``given``."""
    config = getattr(module, "config", None)
    if config is not None and hasattr(config, "as_dict"):
        return dict(config.as_dict())
    if config is not None and dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return {**signature_defaults(type(module)), **given}


def unaccepted_defaults(name: str, accepted: Optional[set[str]], defaults: dict[str, Any],
                        given: dict[str, Any]) -> list[str]:
    """The suite defaults attention ``name`` (taking ``accepted``; None: any) does not take and that are worth a
    warning (see the module docstring); a default whose near namesake the entry's own config ``given`` sets (the
    user gave ``heads`` for ``num_heads``) is taken care of."""
    if accepted is None:
        return []
    from attentions.config import AttentionConfig

    common = {f.name for f in dataclasses.fields(AttentionConfig)}
    out = []
    for key in defaults:
        if key in accepted or key in given or not (":" in name or key in common):
            continue
        near = _near(key, accepted)
        if near is None or near not in given:
            out.append(key)
    return out


def _near(key: str, accepted: set[str]) -> Optional[str]:
    hint = did_you_mean(key, sorted(accepted))
    return hint.split("'")[1] if hint else None


def unaccepted_warning(label: str, cls: type, accepted: set[str], keys: list[str],
                       defaults: dict[str, Any]) -> str:
    """One line: which defaults ``label`` does not take, what it may call them, and what it runs with instead."""
    own = signature_defaults(cls)
    parts = []
    for key in keys:
        near = _near(key, accepted)
        text = f"{key}={defaults[key]!r}"
        if near is not None:
            text += f" (it takes {near!r}" + (f", default {own[near]!r})" if near in own else ")")
        parts.append(text)
    return (f"{label} does not take the suite default(s) {', '.join(parts)}: it runs with its own values, so the "
            f"comparison is not at equal settings; set them in its config (rows record its effective_config)")
