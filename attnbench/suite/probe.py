"""Can an attention run a cell? Asked before anything is allocated, so invalid cells are skipped with a reason.

The probe builds the module once per (attention, config) on the ``meta`` device (no memory, no weights) and asks
it for its analytic ``cost(H, W)``: a module's config validation and its size rules (a grid that is not a multiple
of ``n_win`` without ``auto_pad``, a deformable key grid that comes out empty) raise ``ValueError`` with the reason,
and that reason is what ``--dry-run`` and the ``skipped`` rows show. A class with no ``cost`` (a third-party
module) is taken as able to run anything; it still fails loudly at run time if it cannot.

A model cell (a backbone of ``attentions.models``, see :mod:`attnbench.suite.schema`) is probed the same way: the model
is built on ``meta`` once per (name, config); a build error is the reason, and so is an image side that is not a
multiple of 32 (the backbones downsample by 32 in four stages).
"""
from __future__ import annotations

import functools
import json
import re
from typing import Any, Optional

import torch

import attentions

from .cells import Cell
from ..core.hints import did_you_mean

__all__ = ["Probe", "MODEL_STRIDE", "model_build_problem"]

#: a backbone's total downsampling: its input sides must be multiples of this
MODEL_STRIDE = 32


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split("\n")).strip() or type(e).__name__


@functools.lru_cache(maxsize=None)
def _meta_model_problem(name: str, config_json: str) -> Optional[tuple[Optional[str], str]]:
    from attentions.models import create_model

    try:
        with torch.device("meta"):
            create_model(name, **json.loads(config_json))
    except TypeError as e:  # a keyword the entrypoint (or the backbone) does not take
        text = _one_line(e)
        bad = re.search(r"unexpected keyword argument '(\w+)'", text)
        if bad:
            key = bad.group(1)
            rest = {k: v for k, v in json.loads(config_json).items() if k != key}
            return key, f"{name} takes no parameter {key!r}{_model_hint(name, key, rest)}"
        return None, f"cannot build {name} with this config: {text}"
    except ValueError as e:  # the backbone's or a slot attention's config validation
        return None, f"cannot build {name} with this config: {_one_line(e)}"
    except Exception:  # noqa: BLE001 - a model that cannot be built on meta is checked at run time
        return None
    return None


def _model_hint(name: str, key: str, config: dict[str, Any]) -> str:
    """'; did you mean ...?' from the keywords of the model's class (the model built without ``key``)."""
    import inspect

    from attentions.models import create_model

    try:
        with torch.device("meta"):
            model = create_model(name, **config)
        params = inspect.signature(type(model).__init__).parameters.values()
    except Exception:  # noqa: BLE001 - no hint then; the error itself stands
        return ""
    keys = {p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return did_you_mean(key, sorted(keys))


def model_build_problem(name: str, config: dict[str, Any]) -> Optional[tuple[Optional[str], str]]:
    """(config key or None, why) when ``attentions.models.create_model(name, **config)`` fails on the meta device;
    None when it builds. Cached per (name, config), so loading a suite and probing its cells build each once."""
    return _meta_model_problem(name, json.dumps(config, sort_keys=True, default=str))


class Probe:
    """Callable ``probe(cell) -> reason or None``, caching one meta module per (attention, config).

    ``macs`` collects, per ``cell_id``, the multiply-adds per image of every cell whose ``cost`` answered: what
    the cell's default time limit and the ETA are sized by (:mod:`attnbench.engine.cell_budget`).
    """

    def __init__(self) -> None:
        self._modules: dict[tuple[str, str], Any] = {}
        self.macs: dict[str, int] = {}

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
        if cell.kind == "model":
            return self._model_problem(cell)
        module = self._module(cell.attention, cell.config)
        if isinstance(module, str):
            return module
        cost = getattr(module, "cost", None)
        if module is None or cost is None:
            return None
        try:
            self.macs[cell.cell_id] = int(cost(cell.height, cell.width).total)
        except ValueError as e:
            return _one_line(e)
        except Exception:  # noqa: BLE001 - no cost model (NotImplementedError) or a bug in it: run and see
            return None
        return None

    @staticmethod
    def _model_problem(cell: Cell) -> Optional[str]:
        problem = model_build_problem(cell.attention, cell.config)
        if problem is not None:
            return problem[1]
        if cell.height % MODEL_STRIDE or cell.width % MODEL_STRIDE:
            return (f"image {cell.height}x{cell.width}: a backbone takes sides that are multiples of {MODEL_STRIDE} "
                    "(it downsamples by 32)")
        return None
