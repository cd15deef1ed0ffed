"""Reading one metric's entry of ``MetricContext.settings`` through its settings model (:mod:`attnbench.core.validation`).

A metric declares ``Settings``, a :class:`~attnbench.core.validation.SettingsModel` with the types, defaults and
ranges of its options (a metric written outside attnbench may declare only a ``DEFAULTS`` mapping, typed by its
values). :func:`metric_settings_errors` checks a suite's ``settings.<metric>`` at load time and
:func:`read_settings` reads it at run time, through the same model: one message for one mistake.
"""
from __future__ import annotations

import importlib
from typing import Any, Optional

from ..core.validation import Errors, SettingsModel, check, model_from_defaults, parse
from .base import MetricContext

__all__ = ["read_settings", "settings_model", "metric_settings_errors"]


def read_settings(ctx: MetricContext, metric: str, model: type[SettingsModel]) -> dict[str, Any]:
    """``ctx.settings[metric]`` validated by ``model``, its defaults filled in; ``ValueError`` names the key."""
    return parse(model, ctx.settings.get(metric), f"settings.{metric}")


def settings_model(module: Any, metric: str) -> Optional[type[SettingsModel]]:
    """The metric module's ``Settings``, else a model built from its ``DEFAULTS`` mapping, else None."""
    model = getattr(module, "Settings", None)
    if isinstance(model, type) and issubclass(model, SettingsModel):
        return model
    defaults = getattr(module, "DEFAULTS", None)
    return model_from_defaults(metric, defaults) if isinstance(defaults, dict) else None


def metric_settings_errors(metric: str, module_name: str, given: Any) -> Errors:
    """The load-time errors of ``settings.<metric>``: by its settings model (:func:`settings_model`), else by its
    module's ``validate_settings(dict)`` hook (a ``ValueError`` is one error at ``settings.<metric>``)."""
    where = f"settings.{metric}"
    try:
        module = importlib.import_module(f"attnbench.metrics.{module_name}")
    except ImportError:
        return []  # a metric not installed yet cannot check its settings; running it fails loudly
    model = settings_model(module, metric)
    if model is not None:
        return check(model, given, where)
    hook = getattr(module, "validate_settings", None)
    if hook is None:
        return []
    if not isinstance(given, dict):
        return [(where, f"expected a mapping of settings, got {given!r}")]
    try:
        hook(dict(given))
    except ValueError as e:
        return [(where, str(e))]
    return []
