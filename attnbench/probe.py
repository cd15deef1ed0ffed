"""Can an attention run a cell? Asked before anything is allocated, so invalid cells are skipped with a reason.

The probe builds the module once per (attention, config) on the ``meta`` device (no memory, no weights) and asks
it for its analytic ``cost(H, W)``: a module's config validation and its size rules (a grid that is not a multiple
of ``n_win`` without ``auto_pad``, a deformable key grid that comes out empty) raise ``ValueError`` with the reason,
and that reason is what ``--dry-run`` and the ``skipped`` rows show. A class with no ``cost`` (a third-party
module) is taken as able to run anything; it still fails loudly at run time if it cannot.
"""
from __future__ import annotations

import json
from typing import Any, Optional

import torch

import attentions

from .cells import Cell

__all__ = ["Probe"]


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split("\n")).strip() or type(e).__name__


class Probe:
    """Callable ``probe(cell) -> reason or None``, caching one meta module per (attention, config)."""

    def __init__(self) -> None:
        self._modules: dict[tuple[str, str], Any] = {}

    def _module(self, attention: str, config: dict[str, Any]) -> Any:
        """The meta-device module, or the reason (str) it cannot be built."""
        key = (attention, json.dumps(config, sort_keys=True, default=str))
        if key not in self._modules:
            try:
                with torch.device("meta"):
                    self._modules[key] = attentions.build(attention, **config)
            except (ValueError, TypeError) as e:  # ConfigError is a ValueError; a bad keyword a TypeError
                self._modules[key] = _one_line(e)
            except Exception:  # noqa: BLE001 - a module that cannot be built on meta is checked at run time
                self._modules[key] = None
        return self._modules[key]

    def __call__(self, cell: Cell) -> Optional[str]:
        module = self._module(cell.attention, cell.config)
        if isinstance(module, str):
            return module
        cost = getattr(module, "cost", None)
        if module is None or cost is None:
            return None
        try:
            cost(cell.height, cell.width)
        except ValueError as e:
            return _one_line(e)
        except Exception:  # noqa: BLE001 - no cost model (NotImplementedError) or a bug in it: run and see
            return None
        return None
