"""Named profiler scopes for the parts of a mechanism: where its time goes, in the parts of its cost model.

Every mechanism wraps the code of each part of its ``cost()`` (``projections``, ``routing``, ``attention``,
``offsets_sampling_rpe``, ``lce``; see :mod:`attentions.cost`) in ``with part("dbra", "lce"):``. While a
``torch.profiler`` (or the legacy autograd profiler) runs, that opens ``torch.profiler.record_function(
"attentions.dbra.lce")``; attnbench's ``breakdown`` metric reads those scopes back. Code outside every scope
(layout copies, padding, region partitioning) is the breakdown's ``other``.

Off the profiler a scope does nothing but one check: ``record_function`` itself costs about 10 µs per scope even
when no profiler listens (it dispatches an op), i.e. several percent of a small attention call, so it is only
opened when a profiler is on (``torch.autograd.profiler._is_profiler_enabled``, a flag torch sets for every
profiler). Under ``torch.compile`` a scope is inert too and does not break the graph (the compiled graph fuses
across parts; there is no per-part time to attribute).

Scopes nest: the innermost one owns the time and the operations inside it. Helpers shared by several mechanisms
(``deformable.py``, ``routing.py``) pass ``None`` as the mechanism and take the enclosing scope's.

Observers (:func:`observe_parts`) see the innermost open part without a profiler: the ``breakdown`` metric's
per-part multiply-add counter uses one.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

from .cost import PARTS

__all__ = ["PREFIX", "part", "scope_name", "current_part", "observe_parts", "part_of_scope"]

#: every scope's name starts with this
PREFIX = "attentions."

# torch's own fast Python-side flag, set while any (Kineto or legacy) profiler runs: a module attribute read costs
# ~30 ns and torch.compile reads it as a constant (a C call such as torch._C._autograd._profiler_enabled() would
# break the compiled graph at every scope)
_autograd_profiler = torch.autograd.profiler
#: (mechanism, part) of the open scopes, innermost last; only kept while a profiler or an observer is active
_open: list[tuple[str, str]] = []
_observers = 0


def scope_name(mechanism: Optional[str], name: str) -> str:
    """``attentions.<mechanism>.<part>``."""
    return f"{PREFIX}{mechanism or 'shared'}.{name}"


def part_of_scope(scope: str) -> Optional[str]:
    """The part a scope name belongs to (``attentions.dbra.lce`` -> ``lce``), None for any other name."""
    if not scope.startswith(PREFIX):
        return None
    name = scope.rsplit(".", 1)[-1]
    return name if name in PARTS else None


class part:
    """``with part(mechanism, name):`` marks the code of one cost part (see the module docstring).

    Args:
        mechanism: the registry name (``"dbra"``), or None in a shared helper (the enclosing scope's mechanism).
        name: one of :data:`attentions.cost.PARTS`.
    """

    __slots__ = ("mechanism", "name", "_rf", "_pushed")

    def __init__(self, mechanism: Optional[str], name: str):
        self.mechanism, self.name = mechanism, name
        self._rf = None
        self._pushed = False

    def __enter__(self) -> "part":
        profiling = _autograd_profiler._is_profiler_enabled
        if not (profiling or _observers) or torch.compiler.is_compiling():
            return self
        mech = self.mechanism or (_open[-1][0] if _open else None)
        _open.append((mech or "shared", self.name))
        self._pushed = True
        if profiling:
            self._rf = torch.profiler.record_function(scope_name(mech, self.name))
            self._rf.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._rf is not None:
            self._rf.__exit__(*exc)
            self._rf = None
        if self._pushed:
            _open.pop()
            self._pushed = False


def current_part() -> Optional[str]:
    """The innermost open part (while an observer is active), None outside every scope."""
    return _open[-1][1] if _open else None


@contextlib.contextmanager
def observe_parts() -> Iterator[None]:
    """Keep track of the open parts without a profiler, so :func:`current_part` answers (nests)."""
    global _observers
    _observers += 1
    try:
        yield
    finally:
        _observers -= 1
