"""Reading one metric's entry of ``MetricContext.settings`` with defaults and clear errors."""
from __future__ import annotations

from typing import Any, Mapping

from .base import MetricContext

__all__ = ["read_settings", "merge_settings"]


def _type_name(value: Any) -> str:
    return type(value).__name__


def _check_type(metric: str, key: str, value: Any, default: Any) -> Any:
    """Coerce ``value`` to the kind of ``default`` (int, float, bool, str) or raise naming the key."""
    where = f"settings.{metric}.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where}={value!r} has type {_type_name(value)}, expected a bool")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}={value!r} has type {_type_name(value)}, expected an int")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}={value!r} has type {_type_name(value)}, expected a number")
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ValueError(f"{where}={value!r} has type {_type_name(value)}, expected a string")
    return value


def read_settings(ctx: MetricContext, metric: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` overridden by ``ctx.settings[metric]``; unknown keys and wrong types raise ``ValueError``."""
    return merge_settings(ctx.settings.get(metric), metric, defaults)


def merge_settings(given: Any, metric: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` overridden by ``given`` (a suite's ``settings.<metric>``); checks keys and types.

    A default of ``None`` accepts an int or None (used for optional counts such as ``threads``).
    """
    given = given or {}
    if not isinstance(given, Mapping):
        raise ValueError(f"settings.{metric} must be a mapping of option -> value, got {given!r}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"settings.{metric}: unknown option(s) {unknown}; allowed: {', '.join(defaults)}")
    out = dict(defaults)
    for key, value in given.items():
        default = defaults[key]
        if default is None:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"settings.{metric}.{key}={value!r} has type {_type_name(value)}, expected an int")
            out[key] = value
        else:
            out[key] = _check_type(metric, key, value, default)
    return out
