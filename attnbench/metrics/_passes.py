"""One call of a cell's pass, shared by the latency and memory metrics so both measure the same work.

* ``"forward"``: ``module.eval()``; one forward under ``torch.no_grad()`` (inference).
* ``"forward_backward"``: ``module.train()``; parameter and input gradients reset to ``None`` (``set_to_none``),
  then one forward and ``out.float().sum().backward()`` (one training step without the optimizer).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["PASSES", "MODES", "Step", "reset_grads", "maybe_compile", "first_call", "CompileError"]

PASSES = ("forward", "forward_backward")
MODES = ("eager", "compile")


class CompileError(RuntimeError):
    """``torch.compile`` failed on the first call of a cell's pass."""


def reset_grads(module: nn.Module, x: torch.Tensor) -> None:
    """Drop the gradients of the previous step so each step allocates (and is charged for) its own."""
    module.zero_grad(set_to_none=True)
    x.grad = None


class Step:
    """One pass of a cell, callable with no arguments; :meth:`reset` prepares the next call.

    Args:
        fn: what to call, the module itself or ``torch.compile(module)``.
        module: the eager module (its mode is set here; its gradients are reset by :meth:`reset`).
        x: (B, H, W, C) input; must require grad for ``"forward_backward"`` so the input gradient is computed too.
        pass_: ``"forward"`` or ``"forward_backward"``.

    Callers run ``reset()`` *outside* what they measure: freeing the previous step's gradients is not part of
    a step's time, and would otherwise lower the memory running total before the step allocates anything.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], module: nn.Module, x: torch.Tensor, pass_: str):
        if pass_ not in PASSES:
            raise ValueError(f"pass={pass_!r} is not allowed: expected one of {', '.join(PASSES)}")
        if pass_ == "forward_backward" and not x.requires_grad:
            raise ValueError("pass='forward_backward' needs an input that requires grad (ctx.make_input())")
        self.fn, self.module, self.x, self.pass_ = fn, module, x, pass_
        module.train(pass_ == "forward_backward")

    def reset(self) -> None:
        if self.pass_ == "forward_backward":
            reset_grads(self.module, self.x)

    def __call__(self) -> None:
        if self.pass_ == "forward":
            with torch.no_grad():
                self.fn(self.x)
        else:
            self.fn(self.x).float().sum().backward()


def maybe_compile(module: nn.Module, mode: str, reset: bool = True) -> Callable[[torch.Tensor], torch.Tensor]:
    """``module`` for ``"eager"``, ``torch.compile(module)`` for ``"compile"`` (compiled lazily on first call,
    after ``torch._dynamo.reset()`` unless ``reset`` is False: a second module compiled for the same measurement
    must not throw away the first one's graphs)."""
    if mode == "eager":
        return module
    if mode == "compile":
        # a fresh dynamo state per cell: otherwise the recompile limit, hit after a few shapes, silently turns the
        # later cells eager while they are still reported as compiled
        if reset:
            torch._dynamo.reset()
        return torch.compile(module)
    raise ValueError(f"mode={mode!r} is not allowed: expected one of {', '.join(MODES)}")


def first_call(step: Step, attention: str) -> None:
    """Run the compiling first call, turning any failure into a :class:`CompileError` naming the attention."""
    step.reset()
    try:
        step()
    except (MemoryError, torch.cuda.OutOfMemoryError):
        raise  # the runner records these as "oom", not as a compile failure
    except Exception as e:  # dynamo/inductor raise many types; the runner records the message
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CompileError(
            f"torch.compile failed for {attention!r} on the first call: {type(e).__name__}: {msg}"
        ) from e
