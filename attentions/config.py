"""Typed, validated hyperparameters shared by every attention in the zoo.

Each mechanism declares a frozen dataclass that subclasses :class:`AttentionConfig`. Construction goes through
:meth:`AttentionConfig.from_kwargs`, which rejects unknown keywords and wrongly typed values, then calls
:meth:`validate`; so a bad hyperparameter is a ``ValueError`` naming the parameter, the value and what is allowed,
raised before any tensor is touched (never a shape error deep inside ``forward``).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, ClassVar

from namehint import did_you_mean

__all__ = [
    "AttentionConfig", "ConfigError", "require", "require_size", "require_odd_kernel", "require_groups", "size_pair",
    "field_table", "type_ok", "describe_type",
]


class ConfigError(ValueError):
    """A hyperparameter has a value the mechanism cannot take."""


def require(ok: bool, name: str, value: Any, allowed: str) -> None:
    """Raise a :class:`ConfigError` naming ``name``, ``value`` and what is ``allowed`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{name}={value!r} is not allowed: expected {allowed}")


def size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    """An (h, w) pair from ``n`` (meaning (n, n)) or from a pair; window and RPE-table sizes take either."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def require_size(name: str, size: Any) -> None:
    """Require a positive int or a pair (h, w) of positive ints (bool is not an int)."""
    def positive_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    ok = positive_int(size) or (isinstance(size, (tuple, list)) and len(size) == 2 and all(map(positive_int, size)))
    require(ok, name, size, "a positive int or a pair (h, w) of them")


def require_odd_kernel(name: str, kernel: int, zero_means: str | None = None) -> None:
    """Require an odd convolution kernel >= 1 (centred, so the map keeps its size), or 0 where ``zero_means`` says
    what 0 switches off."""
    ok = (kernel >= 1 and kernel % 2 == 1) or (zero_means is not None and kernel == 0)
    require(ok, name, kernel, f"0 ({zero_means}) or an odd integer >= 1" if zero_means else "an odd integer >= 1")


def require_groups(n_groups: int, num_heads: int, dim: int) -> None:
    """Require offset groups that split both the heads and the channels evenly (DAT and DBRA's ``n_groups``)."""
    require(n_groups >= 1, "n_groups", n_groups, "a positive integer")
    require(num_heads % n_groups == 0, "n_groups", n_groups,
            f"a divisor of num_heads={num_heads} (each group owns num_heads/n_groups heads)")
    require(dim % n_groups == 0, "n_groups", n_groups, f"a divisor of dim={dim}")


def type_ok(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits a config field annotation (bool is not an int; Literal checks membership)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return any(type_ok(value, a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (tuple, list):
        return isinstance(value, (tuple, list))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def describe_type(annotation: Any) -> str:
    """A field annotation in words, for error messages."""
    if typing.get_origin(annotation) is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    """Hyperparameters every attention takes.

    Args:
        dim: channels C of the input and output, ``x`` of shape (B, H, W, C).
        num_heads: attention heads; ``dim`` must be divisible by it.
    """

    dim: int = 64
    num_heads: int = 2

    #: registry name of the mechanism, filled in by :func:`attentions.register`
    mechanism: ClassVar[str] = "attention"

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "AttentionConfig":
        """Build and validate a config; unknown keywords and wrong types raise :class:`ConfigError`."""
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in kwargs.items():
            if key not in fields:
                raise ConfigError(
                    f"{cls.mechanism}: unknown parameter {key!r}{did_you_mean(key, fields)} (allowed: "
                    f"{', '.join(fields)})"
                )
            if not type_ok(value, hints[key]):
                raise ConfigError(
                    f"{cls.mechanism}: {key}={value!r} has type {type(value).__name__}, "
                    f"expected {describe_type(hints[key])}"
                )
            if isinstance(value, list):
                kwargs[key] = tuple(value)
        config = cls(**kwargs)
        try:
            config.validate()
        except ConfigError as e:
            raise ConfigError(f"{cls.mechanism}: {e}") from None
        return config

    def validate(self) -> None:
        """Check the values together; subclasses extend this and call ``super().validate()``."""
        require(self.dim > 0, "dim", self.dim, "a positive integer")
        require(self.num_heads > 0, "num_heads", self.num_heads, "a positive integer")
        require(
            self.dim % self.num_heads == 0,
            "num_heads",
            self.num_heads,
            f"a divisor of dim={self.dim}",
        )

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def field_table(config_cls: type[AttentionConfig]) -> list[tuple[str, str, Any]]:
    """(name, type, default) for each field of a config class, in declaration order."""
    hints = typing.get_type_hints(config_cls)
    rows = []
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((f.name, describe_type(hints[f.name]), default))
    return rows


def is_perfect_square(n: int) -> bool:
    return n >= 0 and math.isqrt(n) ** 2 == n
