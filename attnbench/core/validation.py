"""The one validation engine: pydantic models, and their errors as one line each, ``key.path: expected X, got Y``.

The suite schema (:mod:`attnbench.suite.schema`) and every settings mapping (the suite-level ``settings`` keys and each
metric's ``settings.<metric>``, :class:`RunSettings` and the metrics' ``Settings``) are pydantic models; a suite is
checked at load time and a metric reads its settings at run time through the same model and :func:`parse`, so a
bad value gets the same message both times. Types are strict (a string is not a number, ``true`` is not 1; an
integer is a number).
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Callable, Mapping, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .hints import did_you_mean

__all__ = ["Errors", "SettingsModel", "RunSettings", "PositiveInt", "pydantic_errors", "check", "parse",
           "model_from_defaults", "dataclass_model", "check_dataclass"]

Errors = list[tuple[str, str]]

#: an integer >= 1 (threads, counts)
PositiveInt = typing.Annotated[int, Field(ge=1)]

_EXPECTED = {
    "int_type": "expected an integer", "int_parsing": "expected an integer", "int_from_float": "expected an integer",
    "float_type": "expected a number", "float_parsing": "expected a number",
    "bool_type": "expected true or false", "bool_parsing": "expected true or false",
    "string_type": "expected a string", "list_type": "expected a list", "tuple_type": "expected a list",
    "dict_type": "expected a mapping", "model_type": "expected a mapping", "model_attributes_type": "expected a mapping",
}


def _path(loc: tuple, root: str = "") -> str:
    out = root
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part) or str(part).startswith("function-"):
            continue  # pydantic's validator tags, not keys
        else:
            out += f".{part}" if out else str(part)
    return out or "(suite)"


def pydantic_errors(error: ValidationError, allowed_keys: Callable[[tuple], Sequence[str]],
                    root: str = "") -> Errors:
    """pydantic's errors as (key path under ``root``, 'expected X, got Y') pairs; ``allowed_keys(loc)`` lists the
    keys of the mapping at ``loc`` for the "unknown key" message and its "did you mean"."""
    out: Errors = []
    for err in error.errors(include_url=False):
        loc, kind, got = err["loc"], err["type"], err.get("input")
        if kind == "missing":
            msg = "required key is missing"
        elif kind == "extra_forbidden":
            allowed = list(allowed_keys(loc[:-1]))
            msg = f"unknown key{did_you_mean(str(loc[-1]), allowed)}"
            msg += f" (allowed: {', '.join(allowed)})" if allowed else ""
        elif kind == "too_short":
            msg = f"expected a non-empty list, got {got!r}"
        elif kind in _EXPECTED:
            msg = f"{_EXPECTED[kind]}, got {got!r}"

        elif kind == "value_error":
            msg = str(err["ctx"]["error"]) if "ctx" in err else err["msg"]
        else:
            text = err["msg"]
            text = "expected " + text[len("Input should be "):] if text.startswith("Input should be ") else text
            msg = f"{text}, got {got!r}"
        out.append((_path(loc, root), msg))
    return out


class SettingsModel(BaseModel):
    """Base of every settings model: unknown keys are errors, types are strict, instances are read-only."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _fields(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def check(model: type[BaseModel], given: Any, where: str) -> Errors:
    """The (key path, message) errors of ``given`` against ``model``; ``where`` is its key path
    (``settings.latency``). Empty when it is valid."""
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        return [(where, f"expected a mapping of settings, got {given!r}")]
    try:
        model.model_validate(dict(given))
    except ValidationError as e:
        return pydantic_errors(e, lambda loc: _fields(model) if not loc else [], root=where)
    return []


def parse(model: type[BaseModel], given: Any, where: str) -> dict[str, Any]:
    """``given`` validated by ``model`` with its defaults filled in, as a dict; raises ``ValueError`` with one
    line per problem (the messages :func:`check` gives at load time)."""
    errors = check(model, given, where)
    if errors:
        raise ValueError("; ".join(f"{path}: {msg}" for path, msg in errors))
    return model.model_validate(dict(given or {})).model_dump()


@functools.lru_cache(maxsize=None)
def dataclass_model(cls: type) -> type[SettingsModel]:
    """A settings model with the fields, types and defaults of the stdlib dataclass ``cls`` (settings kept as
    dataclasses, e.g. the accuracy job's, are checked by this engine too)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else Field(default_factory=f.default_factory)
        fields[f.name] = (hints[f.name], default)
    return create_model(f"{cls.__name__}Settings", __base__=SettingsModel, **fields)


def check_dataclass(cls: type, values: Mapping[str, Any], where: str) -> None:
    """Raise ``ValueError`` (one line per problem, as :func:`parse`) unless ``values`` fit the dataclass ``cls``."""
    errors = check(dataclass_model(cls), values, where)
    if errors:
        raise ValueError("; ".join(f"{path}: {msg}" for path, msg in errors))


def _annotation(default: Any) -> Any:
    if default is None:  # an optional count (threads)
        return Optional[int]
    return type(default) if isinstance(default, (bool, int, float, str)) else Any


def model_from_defaults(name: str, defaults: Mapping[str, Any]) -> type[SettingsModel]:
    """A settings model for a metric that declares only a ``DEFAULTS`` mapping: each key typed by its default
    (``None``: an optional integer)."""
    fields = {key: (_annotation(value), value) for key, value in defaults.items()}
    return create_model(f"{name}_settings", __base__=SettingsModel, **fields)


class RunSettings(SettingsModel):
    """The suite-level ``settings`` keys that are not a metric's."""

    #: seconds one cell may take (null: no limit)
    timeout_s: Optional[typing.Annotated[float, Field(gt=0)]] = None
    #: torch threads of every cell (null: the process default)
    threads: Optional[PositiveInt] = None
    #: stop measuring an attention after the same failure twice
    skip_repeated_failures: bool = True
