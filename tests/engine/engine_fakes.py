"""Tiny attentions, metrics and a correctness gate that make the engine's tests independent of the real ones.

The attentions are reached by dotted path (``engine_fakes:Tiny``, built with :func:`dotted`), exactly as a user's
own attention joins a sweep. The metrics take their behaviour from ``TRIPS`` (in-process tests) or from the cell
(``trip_height`` in the attention config also reaches an ``--isolate`` child).
"""
from __future__ import annotations

import dataclasses
import os
import signal
import time

import torch
from torch import nn

from attentions.base import Attention
from attentions.config import AttentionConfig, require
from attentions.cost import Cost

#: metric behaviour for in-process tests: {"interrupt": height, "term": height, "oom": batch, "fail": height}
TRIPS: dict[str, int] = {}
#: (metric name, height, width, batch, pass) of every call of a fake metric, in order
CALLS: list[tuple] = []


def dotted(name: str) -> str:
    """The dotted path of a class of this module, under the module name pytest imported it as."""
    return f"{__name__}:{name}"


@dataclasses.dataclass(frozen=True)
class TinyConfig(AttentionConfig):
    """
    Args:
        scale: output multiplier; must be positive.
        even_only: the grid must have even H and W (checked by ``cost``, as region attentions check n_win).
    """

    dim: int = 8
    num_heads: int = 1
    scale: float = 1.0
    even_only: bool = False

    def validate(self) -> None:
        super().validate()
        require(self.scale > 0, "scale", self.scale, "a positive number")


class Tiny(Attention):
    """A linear map on the channels: the cheapest module with the shape contract."""

    Config = TinyConfig

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.proj = nn.Linear(self.config.dim, self.config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) * self.config.scale

    def cost(self, H: int, W: int) -> Cost:
        if self.config.even_only and (H % 2 or W % 2):
            raise ValueError(f"tiny: H={H}, W={W} must both be even")
        return Cost(macs={"projections": H * W * self.config.dim**2}, keys_per_query=1)


class NaNAttention(Tiny):
    """Returns NaN everywhere: the correctness gate must stop it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * float("nan")


class Crashy(Tiny):
    """Kills its own process with SIGSEGV on the first forward (what a broken kernel does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        os.kill(os.getpid(), signal.SIGSEGV)
        return x


class WrongShape(Tiny):
    """Drops the last row of the grid: runs, and would be timed, but breaks the (B, H, W, C) contract."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[:, :-1]


class WrongDtype(Tiny):
    """Returns float64 for a float32 input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).double()


class FailsLater(Tiny):
    """Passes its gate and warm-up, then raises once its class has run ``LIMIT`` forwards (all instances
    together): an attention that fails in the middle of a shared-baseline group's rounds."""

    LIMIT = 40
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        if type(self).calls > self.LIMIT:
            raise RuntimeError("failed after its warm-up")
        return super().forward(x)


class Sleepy(Tiny):
    """Hangs in Python (an endless wait): the in-process timeout can interrupt it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while True:
            time.sleep(0.05)


class Stubborn(Tiny):
    """Hangs with SIGALRM ignored, as a hang inside one C call would: only killing the process ends it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        signal.signal(signal.SIGALRM, signal.SIG_IGN)
        while True:
            time.sleep(0.05)


def check_finite(ctx, module) -> None:
    """The gate: one forward on the cell's input; NaN or Inf raises."""
    with torch.no_grad():
        out = module(ctx.make_input(False))
    bad = int((~torch.isfinite(out)).sum())
    if bad:
        raise FloatingPointError(f"non-finite output: {bad} of {out.numel()} elements")


def shape_metric(ctx) -> dict:
    """Columns derived from the cell alone, so a test can check them exactly."""
    CALLS.append(("shape", ctx.height, ctx.width, ctx.batch, ctx.pass_))
    module = ctx.make_module()
    return {"fake_params": sum(p.numel() for p in module.parameters()), "fake_tokens": ctx.height * ctx.width,
            "fake_batch": ctx.batch}


def trip_metric(ctx) -> dict:
    """Raises what ``TRIPS`` says for this cell, else returns one column."""
    CALLS.append(("trip", ctx.height, ctx.width, ctx.batch, ctx.pass_))
    if TRIPS.get("interrupt") == ctx.height:
        raise KeyboardInterrupt
    if TRIPS.get("term") == ctx.height:
        os.kill(os.getpid(), signal.SIGTERM)  # the runner turns it into a clean stop
    if TRIPS.get("oom") == ctx.batch:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")
    if TRIPS.get("fail") == ctx.height:
        raise ValueError("boom\nsecond line that must not reach the row")
    return {"fake_trip": 1}


def per_grid_metric(ctx) -> dict:
    """Depends only on the grid, and says so: the runner must call it once per grid."""
    CALLS.append(("per_grid", ctx.height, ctx.width, ctx.batch, ctx.pass_))
    return {"fake_grid": f"{ctx.height}x{ctx.width}"}


per_grid_metric.DEPENDS_ON = ("attention", "config", "height", "width")

def clash_metric(ctx) -> dict:
    """Returns a column named like an identity column: the runner must refuse it."""
    return {"status": "great", "fake_clash": 1}


FAKE_METRICS = {"shape": shape_metric, "trip": trip_metric, "per_grid": per_grid_metric, "clash": clash_metric}


def tiny_suite(**overrides) -> dict:
    """A suite of the Tiny fake: 2 grids x 2 batches x 2 passes = 8 cells, fake metrics."""
    suite = {
        "name": "tiny",
        "attentions": [{"name": dotted("Tiny"), "label": "tiny"}],
        "axes": {"resolution": [4, 6], "batch": [1, 2], "device": ["cpu"], "pass": ["forward", "forward_backward"]},
        "metrics": ["shape", "trip"],
        "baseline": "tiny",
    }
    suite.update(overrides)
    return suite


@dataclasses.dataclass(frozen=True)
class DoublingConfig(TinyConfig):
    """
    Args:
        work: how many times the projection runs: cost (MACs, time) grows in proportion, params do not.
        inert: a knob that changes nothing (an ablation factor with no effect).
    """

    work: int = 1
    inert: int = 1


class Doubling(Tiny):
    """A toy attention whose cost doubles with ``work`` 1 -> 2: the planted effect of the ablation tests."""

    Config = DoublingConfig

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.config.work):
            x = self.proj(x)
        return x

    def cost(self, H: int, W: int) -> Cost:
        return Cost(macs={"projections": self.config.work * H * W * self.config.dim**2}, keys_per_query=1)
