"""The registry mechanism behind both namespaces of the zoo: attentions (:mod:`attentions.registry`) and backbones
(:mod:`attentions.models._registry`).

A :class:`Registry` maps names to objects (classes, model entrypoints). Registering a name twice with a different
object is an error naming the holder; looking up an unknown name raises the namespace's own error class with the
closest registered name (:func:`namehint.did_you_mean`) and the list of names, so each namespace keeps its vocabulary and its exception type.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar

from namehint import did_you_mean

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, for one kind of thing (``"attention"``, ``"model"``).

    Args:
        kind: what a name names, in messages.
        unknown_error: the exception :meth:`get` raises for an unknown name (a ``ValueError`` subclass).
        holder: how a duplicate's message names the registered object (default: its qualified name).
        unknown_suffix: text after the list of names in the unknown-name message (another way in, if any).
    """

    def __init__(self, kind: str, unknown_error: type[Exception], *, holder: Callable[[Any], str] | None = None,
                 unknown_suffix: str = ""):
        self.kind = kind
        self.unknown_error = unknown_error
        self.holder = holder or (lambda obj: getattr(obj, "__qualname__", repr(obj)))
        self.unknown_suffix = unknown_suffix
        self._entries: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` as ``name``; the same object again is a no-op, another object a ``ValueError``."""
        held = self._entries.get(name)
        if held is not None and held is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered to {self.holder(held)}")
        self._entries[name] = obj
        return obj

    def set(self, name: str, obj: T) -> None:
        """Put ``obj`` under ``name`` without the duplicate check (a lazy entry replaced by what it loaded)."""
        self._entries[name] = obj

    def names(self, pattern: Optional[str] = None) -> list[str]:
        """Sorted names, optionally filtered by a shell-style pattern (``'debiformer_t*'``)."""
        names = sorted(self._entries)
        return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names

    def get(self, name: str) -> T:
        """The object of ``name``; an unknown name raises :attr:`unknown_error` with the closest name."""
        try:
            return self._entries[name]
        except KeyError:
            pass
        raise self.unknown_error(f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)} (registered: "
                                 f"{', '.join(self.names())}{self.unknown_suffix})")

    def copy(self) -> "Registry[T]":
        """An independent registry with the same entries (tests register into a copy)."""
        other = Registry(self.kind, self.unknown_error, holder=self.holder, unknown_suffix=self.unknown_suffix)
        other._entries = dict(self._entries)
        return other

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
