"""The checks behind :func:`attnbench.suite.load.load_suite`, each returning ``[(key path, message), ...]``.

Three layers: pydantic's structural errors reworded as "expected X, got Y"; checks that span keys (labels,
baseline, zip, exclude); and checks against the ``attentions`` registry and the metric table (imported here, so
only loading a suite, never importing :mod:`attnbench.suite.schema`, pulls in torch).

A model suite (``models:``) is checked against ``attentions.models``: unknown names get a did-you-mean, and each
entry's config (``defaults`` merged in: every model takes every default) is tried by building the model on the
``meta`` device, so a keyword the model does not take is an error at ``models[i].config.<key>``.

``defaults`` semantics (attention suites): a default key is given to every attention that accepts it (a field of
its ``Config``, or a parameter of its constructor for a class without one); the entry's own ``config`` wins over
``defaults``. A default that no attention of the suite accepts is an error (it is a typo), and so is an entry key
its attention does not accept.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import typing
from typing import Any, Optional

from pydantic import ValidationError

from ..core import validation
from .factors import factor_errors
from ..core.hints import import_path_hint
from .schema import CELL_KEYS, DTYPES, MODES, PASSES, Suite, did_you_mean, parse_resolution

__all__ = ["pydantic_errors", "structural_errors", "attention_errors", "model_errors", "resolve_entries",
           "accepted_keys"]

Errors = list[tuple[str, str]]

def _allowed_keys(loc: tuple) -> list[str]:
    """The keys the model at ``loc`` takes (by YAML name), for 'unknown key' messages."""
    from . import schema as s

    if s.BATCH_MAP_TAG in loc:
        return ["cpu", "cuda"]
    model: Any = Suite
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get("pass_" if part == "pass" else part)
        if field is None:
            break
        ann = field.annotation
        while typing.get_origin(ann) in (list, typing.Union, Optional):
            ann = next(a for a in typing.get_args(ann) if a is not type(None))
        model = ann
    if model in (s.Suite, s.AttentionEntry, s.ModelEntry, s.Axes):
        return [f.alias or n for n, f in model.model_fields.items()]
    return []


def pydantic_errors(error: ValidationError) -> Errors:
    """pydantic's errors on the suite schema as (key path, 'expected X, got Y') pairs (:mod:`attnbench.core.validation`)."""
    return validation.pydantic_errors(error, _allowed_keys)


def structural_errors(suite: Suite) -> Errors:
    """Checks that span keys: attentions or models (one of them), unique labels, the baseline, zip groups, exclude
    entries, metrics."""
    errors: Errors = []
    if suite.attentions is None and suite.models is None:
        return [("attentions", "required key is missing: a suite lists the attentions to measure under "
                 "'attentions' (token maps), or whole backbones under 'models' (images)")]
    if suite.attentions is not None and suite.models is not None:
        return [("models", "a suite lists either 'attentions' or 'models', not both; put the models in a suite "
                 "of their own")]
    key = suite.entries_key
    raw = list(suite.models if suite.models is not None else suite.attentions)
    errors += factor_errors(raw, key)
    if suite.models is not None:
        errors += [(f"models[{i}].vary", "factors (vary, vary_product) are for attention entries; list each model "
                    "config as its own entry") for i, e in enumerate(raw) if e.vary or e.vary_product]
    if errors:
        return errors
    seen: dict[str, int] = {}
    for i, entry in enumerate(suite.entries):
        label, origin = entry.display, getattr(entry, "origin", i)
        if label in seen:
            where = "label" if getattr(entry, "factor", None) is None else f"vary.{entry.factor}"
            errors.append((f"{key}[{origin}].{where}", f"duplicate label {label!r} (also {key}[{seen[label]}]); "
                           "give each entry a distinct label"))
        seen.setdefault(label, origin)
    if suite.baseline not in seen:
        errors.append(("baseline", f"expected the label of one of this suite's {key} ({', '.join(seen)}), "
                       f"got {suite.baseline!r}{did_you_mean(suite.baseline, list(seen))}"))
    errors += _zip_errors(suite)
    for i, spec in enumerate(suite.exclude):
        errors += [(f"exclude[{i}]{'.' + k if k else ''}", m) for k, m in exclude_spec_errors(spec, suite)]
    for i, name in enumerate(suite.metrics):
        if name in suite.metrics[:i]:
            errors.append((f"metrics[{i}]", f"duplicate metric {name!r}"))
    for i, seed in enumerate(suite.seeds or []):
        if seed in suite.seeds[:i]:
            errors.append((f"seeds[{i}]", f"duplicate seed {seed}; list each training seed once"))
    return errors


def _zip_errors(suite: Suite) -> Errors:
    errors: Errors = []
    used: dict[str, int] = {}
    for g, group in enumerate(suite.zip):
        if len(group) < 2:
            errors.append((f"zip[{g}]", f"expected two or more axis names to vary together, got {group!r}"))
        for axis in group:
            if axis in used:
                errors.append((f"zip[{g}]", f"axis {axis!r} is already zipped in zip[{used[axis]}]"))
            used.setdefault(axis, g)
        lengths = {axis: len(suite.axes.values(axis)) for axis in group}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{a}: {n}" for a, n in lengths.items())
            errors.append((f"zip[{g}]", f"zipped axes must have the same number of values, got {detail}"))
    return errors


def exclude_spec_errors(spec: Any, suite: Suite) -> Errors:
    """Problems of one exclude entry, as (key, message); key '' for the entry itself."""
    if not isinstance(spec, dict) or not spec:
        return [("", f"expected a non-empty mapping of cell keys ({', '.join(CELL_KEYS)}), got {spec!r}")]
    errors: Errors = []
    enums = {"dtype": DTYPES, "pass": PASSES, "mode": MODES, "device": ("cpu", "cuda")}
    for key, value in spec.items():
        if key not in CELL_KEYS:
            errors.append((str(key), f"unknown cell key{did_you_mean(str(key), CELL_KEYS)} "
                           f"(allowed: {', '.join(CELL_KEYS)})"))
            continue
        values = [value] if key == "resolution" or not isinstance(value, list) else value
        for v in values:
            if key == "resolution":
                try:
                    parse_resolution(v)
                except ValueError as e:
                    errors.append((key, str(e)))
            elif key in ("batch", "height", "width", "tokens"):
                if not (isinstance(v, int) and not isinstance(v, bool)):
                    errors.append((key, f"expected an integer, got {v!r}"))
            elif not isinstance(v, str):
                errors.append((key, f"expected a string (a glob is allowed), got {v!r}"))
            elif key in enums and not _has_glob(v) and v not in enums[key]:
                errors.append((key, f"expected one of {', '.join(enums[key])}, got {v!r}"))
            elif key in ("attention", "label", "model"):
                if key == "label":
                    known = suite.labels()
                elif key == "attention" or suite.kind == "model":
                    known = [e.name for e in suite.entries]
                else:
                    known = []
                if not any(fnmatch.fnmatchcase(k, v) for k in known):
                    errors.append((key, f"{v!r} matches no {key} of this suite{did_you_mean(v, known)}"))
    return errors


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


# -- checks against the registry and the metric table -------------------------------------------------------------

def accepted_keys(cls: type) -> Optional[set[str]]:
    """The config keys an attention class takes; None when its constructor takes ``**kwargs`` with no Config."""
    config_cls = getattr(cls, "Config", None)
    if config_cls is not None and dataclasses.is_dataclass(config_cls):
        return {f.name for f in dataclasses.fields(config_cls)}
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.name != "self" and p.kind is not p.VAR_POSITIONAL}


def _resolve(name: str) -> tuple[Optional[type], Optional[str]]:
    """(class, None) or (None, why it is not an attention)."""
    import attentions

    if ":" not in name and name not in attentions.available():
        known = attentions.available()
        return None, (f"unknown attention {name!r}{did_you_mean(name, known)} (registered: {', '.join(known)}; "
                      "or give a dotted path 'package.module:Class')")
    try:
        return attentions.resolve(name), None
    except (ValueError, ImportError) as e:
        return None, str(e) + import_path_hint(name, e)


def _type_error(cls: type, key: str, value: Any) -> Optional[str]:
    """'expected X, got Y' when ``value`` does not fit the type of ``Config.key``; None when it does or is unknown."""
    from attentions.config import describe_type, type_ok  # the registry's own type rules, so load == build

    config_cls = getattr(cls, "Config", None)
    if config_cls is None:
        return None
    hint = typing.get_type_hints(config_cls).get(key)
    if hint is None or type_ok(value, hint):
        return None
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return f"expected {words.get(hint, describe_type(hint))}, got {value!r}"


def attention_errors(suite: Suite) -> Errors:
    """Unknown attentions (with did-you-mean), config keys an attention does not take, wrongly typed values,
    unused defaults, unknown metrics and settings."""
    if suite.kind == "model":
        return model_errors(suite)
    errors: Errors = []
    used_defaults: set[str] = set()
    for i, entry in enumerate(suite.attentions or []):
        cls, why = _resolve(entry.name)
        if cls is None:
            errors.append((f"attentions[{i}].name", why or "not an attention"))
            continue
        keys = accepted_keys(cls)
        used_defaults |= set(suite.defaults) if keys is None else set(suite.defaults) & keys
        for key, value in entry.config.items():
            if keys is not None and key not in keys:
                errors.append((f"attentions[{i}].config.{key}", f"{entry.name} has no parameter {key!r}"
                               f"{did_you_mean(key, sorted(keys))} (allowed: {', '.join(sorted(keys))})"))
            elif (msg := _type_error(cls, key, value)) is not None:
                errors.append((f"attentions[{i}].config.{key}", msg))
        for field in ("vary", "vary_product"):  # a factor's key and values, checked like config's
            for key, values in (getattr(entry, field) or {}).items():
                if keys is not None and key not in keys:
                    errors.append((f"attentions[{i}].{field}.{key}", f"{entry.name} has no parameter {key!r}"
                                   f"{did_you_mean(key, sorted(keys))} (allowed: {', '.join(sorted(keys))})"))
                    continue
                errors += [(f"attentions[{i}].{field}.{key}[{j}]", msg) for j, value in enumerate(values)
                           if (msg := _type_error(cls, key, value)) is not None]
        for key, value in suite.defaults.items():
            if key not in entry.config and (keys is None or key in keys):
                if (msg := _type_error(cls, key, value)) is not None:
                    errors.append((f"defaults.{key}", f"{msg} (for {entry.name})"))
    if not errors:
        for key in sorted(set(suite.defaults) - used_defaults):
            errors.append((f"defaults.{key}", "no attention of this suite takes this parameter"))
    return errors + metric_errors(suite)


def model_errors(suite: Suite) -> Errors:
    """Unknown model names (with did-you-mean) and configs the model cannot be built with, then the metrics."""
    from attentions.models import list_models

    from .probe import model_build_problem

    known = list_models()
    errors: Errors = []
    for i, entry in enumerate(suite.models or []):
        if entry.name not in known:
            errors.append((f"models[{i}].name", f"unknown model {entry.name!r}{did_you_mean(entry.name, known)} "
                           f"(registered: {', '.join(known)})"))
            continue
        problem = model_build_problem(entry.name, {**suite.defaults, **entry.config})
        if problem is not None:
            key, msg = problem
            if key is not None and key in suite.defaults and key not in entry.config:
                errors.append((f"defaults.{key}", f"{msg} (for {entry.name})"))
            else:
                errors.append((f"models[{i}].config" + (f".{key}" if key else ""), msg))
    return errors + metric_errors(suite)


def metric_errors(suite: Suite) -> Errors:
    """Metric names must be in ``attnbench.metrics.METRICS``, and so must the keys of ``settings`` other than the
    run-wide ones (:class:`attnbench.core.validation.RunSettings`); each is checked by its settings model, the one its
    metric reads at run time (:func:`attnbench.metrics._settings.metric_settings_errors`)."""
    from .. import metrics
    from ..metrics._settings import metric_settings_errors

    known = list(metrics.METRICS)
    run_keys = list(validation.RunSettings.model_fields)
    errors: Errors = []
    for i, name in enumerate(suite.metrics):
        if name not in known:
            errors.append((f"metrics[{i}]", f"unknown metric {name!r}{did_you_mean(name, known)} "
                           f"(known: {', '.join(known)})"))
    errors += validation.check(validation.RunSettings, {k: v for k, v in suite.settings.items() if k in run_keys},
                               "settings")
    for key, value in suite.settings.items():
        if key in run_keys:
            continue
        if key not in known:
            errors.append((f"settings.{key}", f"not a metric, {', '.join(run_keys)}"
                           f"{did_you_mean(key, known + run_keys)} (known: {', '.join(known)})"))
        else:
            errors += metric_settings_errors(key, metrics.METRICS[key], value)
    return errors


def resolve_entries(suite: Suite) -> Suite:
    """The suite with every entry's label filled in and ``defaults`` merged into its config (a model takes every
    default)."""
    import attentions

    if suite.kind == "model":
        models = [e.model_copy(update={"label": e.display, "config": {**suite.defaults, **e.config}})
                  for e in suite.models or []]
        return suite.model_copy(update={"models": models})
    import warnings

    from .effective_config import unaccepted_defaults, unaccepted_warning

    entries = []
    for entry in suite.attentions:
        cls = attentions.resolve(entry.name)
        keys = accepted_keys(cls)
        skipped = unaccepted_defaults(entry.name, keys, suite.defaults, entry.config)
        if skipped:  # one warning per attention: a silently unequal comparison otherwise
            warnings.warn(unaccepted_warning(entry.display, cls, keys or set(), skipped, suite.defaults),
                          stacklevel=2)
        merged = {k: v for k, v in suite.defaults.items() if keys is None or k in keys}
        merged.update(entry.config)
        entries.append(entry.model_copy(update={"label": entry.display, "config": merged}))
    return suite.model_copy(update={"attentions": entries})
