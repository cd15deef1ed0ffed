"""The contract every attention in the zoo follows.

* ``forward(x)``: ``x`` of shape (B, H, W, C), channels-last, returns (B, H, W, C).
* Constructor: keywords only, validated by the class's ``Config`` (see :mod:`attentions.config`); a module
  declares its config class as the type argument, ``class DAT(Attention[DATConfig])``, and builds its layers in
  ``build(config)``.
* ``cost(H, W)``: the analytic multiply-add model of one image (see :mod:`attentions.cost`).
* ``convert_official(state_dict)``: maps an official module's ``state_dict`` onto this module's names and shapes;
  :func:`attentions.from_official` loads the result strictly.
"""
from __future__ import annotations

import typing
from typing import Any, ClassVar, Generic, Mapping, TypeVar

import torch
from torch import nn

from .config import AttentionConfig
from .cost import Cost

__all__ = ["Attention", "OfficialStateDictError", "check_input"]

ConfigT = TypeVar("ConfigT", bound=AttentionConfig)


class OfficialStateDictError(ValueError):
    """An official state dict does not fit the module: lists missing, unexpected and wrongly shaped keys."""

    def __init__(self, mechanism: str, missing: list[str], unexpected: list[str], wrong_shape: list[str]):
        self.missing, self.unexpected, self.wrong_shape = missing, unexpected, wrong_shape
        parts = [f"{mechanism}: the official state_dict does not match this config"]
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected)}")
        if wrong_shape:
            parts.append(f"wrong shapes: {'; '.join(wrong_shape)}")
        super().__init__("\n  ".join(parts))


def check_input(x: torch.Tensor, dim: int, mechanism: str) -> None:
    """Raise a clear error unless ``x`` is (B, H, W, dim)."""
    if x.dim() != 4 or x.shape[-1] != dim:
        raise ValueError(
            f"{mechanism}: expected x of shape (B, H, W, C={dim}) (channels-last), got {tuple(x.shape)}"
        )


class Attention(nn.Module, Generic[ConfigT]):
    """Base class of the zoo's modules.

    A subclass names its config class as the type argument (``class DAT(Attention[DATConfig])``), which sets
    ``Config`` and types ``self.config``; it creates its layers in :meth:`build` and implements ``forward`` and
    ``cost``. Overriding ``__init__(**kwargs)`` and calling ``super().__init__(**kwargs)`` works as well.
    """

    Config: ClassVar[type[AttentionConfig]] = AttentionConfig
    config: ConfigT
    #: registry name, set by :func:`attentions.register`
    name: ClassVar[str] = "attention"
    #: the :class:`attentions.inspect.Recorder` while :func:`attentions.inspect` runs; recording points test it
    _inspector: ClassVar[Any] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):  # the config class from ``Attention[SomeConfig]``
            args = typing.get_args(base) if typing.get_origin(base) is Attention else ()
            if args and isinstance(args[0], type):
                cls.Config = args[0]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.config = self.Config.from_kwargs(**kwargs)  # type: ignore[assignment]
        self.build(self.config)

    def build(self, config: ConfigT) -> None:
        """Create the submodules and parameters from the validated ``config`` (called once by ``__init__``)."""

    # -- contract ---------------------------------------------------------------------------------------------
    def cost(self, H: int, W: int) -> Cost:  # pragma: no cover - every registered module overrides it
        raise NotImplementedError(f"{type(self).__name__} has no analytic cost model")

    @classmethod
    def convert_official(cls, state_dict: Mapping[str, torch.Tensor], config: AttentionConfig) -> dict:
        """Official key names and shapes -> ours. The default is the identity (our names are the official ones)."""
        return dict(state_dict)

    def load_official(self, state_dict: Mapping[str, torch.Tensor]) -> "Attention":
        """Convert and strictly load an official state dict; any mismatch raises :class:`OfficialStateDictError`."""
        converted = self.convert_official(state_dict, self.config)
        own = self.state_dict()
        missing = sorted(set(own) - set(converted))
        unexpected = sorted(set(converted) - set(own))
        wrong = sorted(
            f"{k}: got {tuple(converted[k].shape)}, expected {tuple(own[k].shape)}"
            for k in set(own) & set(converted)
            if tuple(converted[k].shape) != tuple(own[k].shape)
        )
        if missing or unexpected or wrong:
            raise OfficialStateDictError(self.name, missing, unexpected, wrong)
        self.load_state_dict(converted, strict=True)
        return self

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.as_dict().items())
