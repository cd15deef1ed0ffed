"""What a metric receives: one benchmark cell, ready to measure.

A metric is a module ``attnbench/metrics/<name>.py`` with a function ``measure(ctx: MetricContext) -> dict``
returning flat columns with units in their names (``latency_ms_median``, ``mem_peak_bytes``, ``macs_fvcore``). It
knows nothing of suites, the runner or the CLI. An exception it raises becomes the cell's ``error`` column.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import torch
from torch import nn

__all__ = ["MetricContext"]


@dataclasses.dataclass
class MetricContext:
    """One cell: an attention (or a whole backbone), an input shape and the settings to measure it with.

    Attributes:
        attention: the registry name or dotted path the module was built from (a model cell: the model's name in
            ``attentions.models``).
        config: the hyperparameters it was built with.
        make_module: builds a fresh module on ``device`` with ``dtype`` (metrics that train or compile take their own).
        batch, height, width: input (batch, H, W); the channel count is ``config['dim']`` (a model cell: the
            image's ``config['in_chans']``, default 3).
        kind: ``"attention"``: the input is a (B, H, W, C) token map and the output has its shape; ``"model"``: the
            input is a (B, C, H, W) image and the output (B, num_classes) logits (see :meth:`input_shape`).
        dtype: ``torch.float32``, ``torch.bfloat16`` or ``torch.float16``.
        device: ``torch.device``.
        pass_: ``"forward"`` or ``"forward_backward"``.
        mode: ``"eager"`` or ``"compile"``.
        label: the cell's label in its suite (the attention name unless the suite gave one).
        baseline: the suite baseline's context at the same shape, batch, dtype, device, pass and mode, when the
            suite has a baseline, the cell is not it, and the baseline runs at that shape (``latency`` times the
            two interleaved); else None.
        settings: the suite's per-metric settings, metric name -> dict, e.g.
            ``settings["latency"] == {"warmup": 3, "min_time_s": 0.2, "min_repeats": 5, "max_repeats": 200}``;
            a metric reads only its own entry and has defaults for everything.
    """

    attention: str
    config: dict[str, Any]
    make_module: Callable[[], nn.Module]
    batch: int
    height: int
    width: int
    dtype: torch.dtype
    device: torch.device
    pass_: str = "forward"
    mode: str = "eager"
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0
    label: str = ""
    baseline: Optional["MetricContext"] = None
    kind: str = "attention"

    @property
    def dim(self) -> int:
        return int(self.config.get("dim", 64))

    @property
    def in_chans(self) -> int:
        """Image channels of a model cell."""
        return int(self.config.get("in_chans", 3))

    def input_shape(self, batch: int | None = None) -> tuple[int, int, int, int]:
        """The input's shape at ``batch`` (default the cell's): (B, H, W, C) for an attention, (B, C, H, W) images
        for a model."""
        b = self.batch if batch is None else batch
        if self.kind == "model":
            return (b, self.in_chans, self.height, self.width)
        return (b, self.height, self.width, self.dim)

    def make_input(self, requires_grad: bool | None = None) -> torch.Tensor:
        """A seeded input of :meth:`input_shape` on the cell's device and dtype; requires grad for
        forward_backward."""
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        x = torch.randn(self.input_shape(), generator=gen)
        x = x.to(device=self.device, dtype=self.dtype)
        if requires_grad is None:
            requires_grad = self.pass_ == "forward_backward"
        return x.requires_grad_(requires_grad)
