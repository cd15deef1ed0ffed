"""Factors of an ablation: an entry's ``vary`` / ``vary_product`` expanded into labelled variants.

An attention entry (or a model entry) may vary its config around itself, the **reference**:

- ``vary: {topk: [1, 2, 8, 16], n_groups: [2]}``: one factor at a time. Each value of each key is one variant, the
  reference's config with that one key changed (``dbra-topk=8``, ``dbra-n_groups=2``).
- ``vary_product: {n_groups: [1, 2], offset_stride: [8, 4]}``: the interactions of several keys. Every combination
  is one variant with all those keys set (``dbra-n_groups=2+offset_stride=4``); the keys together are one factor,
  ``n_groups+offset_stride``.

A value equal to the reference's own (its ``config``, else the suite's ``defaults``) is the reference itself and
gets no variant of its own (a product combination is left out only when every key is the reference's). A key the
reference does not set keeps every value: its default lives in the attention's ``Config``, which this torch-free
module cannot read, so write the reference's value in ``config`` to have it recognised.

Every expanded entry (:class:`FactorEntry`) carries the columns each of its rows records: ``factor`` (the key, or
the product's keys joined by ``+``; null on the reference), ``factor_value`` (the value; a mapping for a product),
``is_reference`` and ``factor_reference`` (the reference's label). In a suite with factors, entries without any
also carry them (all null, ``is_reference`` false), so every row of such a run has the columns.
"""
from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any, Iterable, Optional

__all__ = ["FACTOR_COLUMNS", "LABEL_PATTERN", "PRODUCT_JOIN", "FactorEntry", "expand_entries", "factor_errors", "has_factors",
           "value_text"]

#: the characters of a label (``=`` for the variants of a factor, ``dbra-topk=8``)
LABEL_PATTERN = r"^[A-Za-z0-9_.:+\-=]+$"

#: the columns a row of a suite with factors carries (after the identity columns)
FACTOR_COLUMNS = ("factor", "factor_value", "is_reference", "factor_reference")
#: joins the keys of a product factor (``n_groups+offset_stride``) and its parts in a label
PRODUCT_JOIN = "+"
_SCALARS = (bool, int, float, str, type(None))


def value_text(value: Any) -> str:
    """How a factor value reads in a label and a table: ``8``, ``0.5``, ``true``, ``null``, ``pp``."""
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _same(a: Any, b: Any) -> bool:
    """Equal as config values: ``True`` is not ``1`` (YAML keeps them apart, so do the labels)."""
    return type(a) is type(b) and a == b or (isinstance(a, float) and isinstance(b, float) and math.isclose(a, b))


class FactorEntry:
    """One expanded entry: what to build (``name``, ``label``, ``config``), where it came from (``origin``: its
    index in the suite's list) and its factor columns. Duck-types :class:`attnbench.suite.schema.AttentionEntry`."""

    __slots__ = ("name", "label", "config", "origin", "factor", "factor_value", "is_reference", "factor_reference")

    def __init__(self, name: str, label: str, config: dict[str, Any], origin: int, factor: Optional[str] = None,
                 factor_value: Any = None, is_reference: bool = False, factor_reference: Optional[str] = None):
        self.name, self.label, self.config, self.origin = name, label, config, origin
        self.factor, self.factor_value = factor, factor_value
        self.is_reference, self.factor_reference = is_reference, factor_reference

    @property
    def display(self) -> str:
        return self.label

    def factor_columns(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in FACTOR_COLUMNS}

    def __repr__(self) -> str:
        return f"FactorEntry({self.label!r}, factor={self.factor!r}, factor_value={self.factor_value!r})"


def has_factors(entries: Iterable[Any]) -> bool:
    return any(getattr(e, "vary", None) or getattr(e, "vary_product", None) for e in entries)


def _reference_value(entry: Any, defaults: dict[str, Any], key: str) -> tuple[bool, Any]:
    if key in entry.config:
        return True, entry.config[key]
    if key in defaults:
        return True, defaults[key]
    return False, None


def _variants(entry: Any, origin: int, defaults: dict[str, Any]) -> list[FactorEntry]:
    ref = entry.display
    out = [FactorEntry(entry.name, ref, dict(entry.config), origin, is_reference=True, factor_reference=ref)]
    for key, values in (entry.vary or {}).items():
        known, own = _reference_value(entry, defaults, key)
        for value in values:
            if known and _same(value, own):
                continue
            out.append(FactorEntry(entry.name, f"{ref}-{key}={value_text(value)}", {**entry.config, key: value},
                                   origin, key, value, False, ref))
    product = entry.vary_product or {}
    if product:
        keys = list(product)
        refs = [_reference_value(entry, defaults, k) for k in keys]
        for combo in itertools.product(*(product[k] for k in keys)):
            if all(known and _same(v, own) for v, (known, own) in zip(combo, refs)):
                continue
            parts = PRODUCT_JOIN.join(f"{k}={value_text(v)}" for k, v in zip(keys, combo))
            out.append(FactorEntry(entry.name, f"{ref}-{parts}", {**entry.config, **dict(zip(keys, combo))}, origin,
                                   PRODUCT_JOIN.join(keys), dict(zip(keys, combo)), False, ref))
    return out


def expand_entries(entries: list[Any], defaults: dict[str, Any]) -> list[Any]:
    """The suite's entries with every ``vary``/``vary_product`` expanded, in suite order (the reference first,
    then ``vary`` key by key, then the product). Without any factor, ``entries`` unchanged."""
    if not has_factors(entries):
        return list(entries)
    out: list[Any] = []
    for i, entry in enumerate(entries):
        if entry.vary or entry.vary_product:
            out += _variants(entry, i, defaults)
        else:
            out.append(FactorEntry(entry.name, entry.display, dict(entry.config), i))
    return out


def factor_errors(entries: list[Any], key: str) -> list[tuple[str, str]]:
    """Problems of the ``vary``/``vary_product`` mappings, as (key path, message): empty lists, values that are not
    scalars (or cannot be written in a label), repeated values, a key in both, a product of one key."""
    errors: list[tuple[str, str]] = []
    for i, entry in enumerate(entries):
        for field in ("vary", "vary_product"):
            mapping = getattr(entry, field, None) or {}
            for name, values in mapping.items():
                where = f"{key}[{i}].{field}.{name}"
                for j, value in enumerate(values):
                    if not isinstance(value, _SCALARS):
                        errors.append((f"{where}[{j}]", f"expected a number, a string, true/false or null, got "
                                       f"{value!r}"))
                    elif not re.fullmatch(LABEL_PATTERN, value_text(value)):
                        errors.append((f"{where}[{j}]", f"{value!r} cannot be written in a label (letters, digits "
                                       "and _ . : + - = only)"))
                    elif any(_same(value, v) for v in values[:j]):
                        errors.append((f"{where}[{j}]", f"duplicate value {value!r}"))
        product = entry.vary_product or {}
        if len(product) == 1:
            errors.append((f"{key}[{i}].vary_product", f"expected two or more keys to combine, got "
                           f"{list(product)}; one key alone belongs under 'vary'"))
        for name in product:
            if name in (entry.vary or {}):
                errors.append((f"{key}[{i}].vary_product.{name}", f"{name!r} is also under 'vary'; a key is either "
                               "varied alone or combined"))
    return errors
