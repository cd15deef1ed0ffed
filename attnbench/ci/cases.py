"""The CI benchmark cases: what ``benchmarks/`` times with pytest-benchmark and what ``attnbench ci`` gates.

Each case builds a :class:`Work` on a device: a callable doing one call of the measured work (``step``) after an
untimed-in-spirit ``reset`` (dropping the previous call's gradients, a few pointer writes) and, on CUDA, a
synchronize so a wall-clock timer sees the kernels finish. Cases (small, CPU-sized, seeded):

* ``attention-<name>-<pass>-<H>`` — each built-in attention at its default config (DBRA with ``auto_pad``), on a
  (1, H, H, 64) input for H in :data:`GRIDS`, ``forward`` (eval, ``no_grad``) and ``forward_backward`` (one
  training step without optimizer), exactly the passes of :mod:`attnbench.metrics._passes`.
* ``op-routed_attention-<pass>-28`` — :func:`attentions.routing.routed_attention` at BRA's stage-1 layout of a
  28×28 map (7×7 regions of 16 tokens, top-4, 2 heads of 32): the lean torch path on CPU, the Triton kernel on CUDA.
* ``op-pixel_agent-<pass>-28`` — DBRA's pixel-to-agent attention (784 pixels against 49 agents with the RPE
  bias): :func:`attentions.deformable.pixel_to_agent_attention_torch` on CPU, the Triton kernel on CUDA.
* ``backbone-dbra_tiny-train_step-32`` — the ``tiny`` DeBiFormer-style backbone (``models.create_model("swap",
  attention="dbra", macro="tiny")``) at batch 2, 32², one SGD step (forward, cross-entropy, backward, update).

Test hook: ``ATTNBENCH_CI_SLOWDOWN`` = ``N`` or ``GLOB=N[,GLOB=N…]`` makes the matching cases run their step N
times per call (an injected N× slowdown, used to check that the gate flags it; never set it otherwise).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import os
from typing import Callable, Optional, Sequence

import torch
from torch import nn

__all__ = ["Case", "Work", "GRIDS", "ATTENTIONS", "SLOWDOWN_ENV", "all_cases", "select", "get_case",
           "slowdown_factor"]

#: token grids of the attention cases (two small shapes)
GRIDS = (14, 28)
#: the built-in attentions and the config that lets each run at every grid in GRIDS
ATTENTIONS: dict[str, dict] = {"mhsa": {}, "bra": {}, "dbra": {"auto_pad": True}, "dat": {}, "agent": {}}
PASSES = ("forward", "forward_backward")
SLOWDOWN_ENV = "ATTNBENCH_CI_SLOWDOWN"
SEED = 0


class Work:
    """One call of a case: ``reset()``, then ``repeat`` × ``step()``, then a CUDA synchronize (on CUDA).

    ``step`` and ``reset`` are also used apart: the memory probe resets first and measures ``step`` alone.
    """

    def __init__(self, step: Callable[[], None], reset: Callable[[], None], device: torch.device,
                 repeat: int = 1):
        self.step, self.reset, self.device, self.repeat = step, reset, device, repeat

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self) -> None:
        self.reset()
        for _ in range(self.repeat):
            self.step()
        self.sync()


@dataclasses.dataclass(frozen=True)
class Case:
    """A named benchmark: ``build(device)`` makes its :class:`Work` (fresh module and seeded inputs)."""

    name: str
    group: str
    params: dict
    make: Callable[[torch.device], Work]

    def build(self, device: torch.device | str) -> Work:
        work = self.make(torch.device(device))
        work.repeat = slowdown_factor(self.name)
        return work


def slowdown_factor(name: str, spec: Optional[str] = None) -> int:
    """The injected slowdown of case ``name`` from ``ATTNBENCH_CI_SLOWDOWN`` (1 when unset or not matching)."""
    spec = os.environ.get(SLOWDOWN_ENV, "") if spec is None else spec
    for part in filter(None, (p.strip() for p in spec.split(","))):
        pattern, _, factor = part.rpartition("=") if "=" in part else ("*", "=", part)
        try:
            n = int(factor)
        except ValueError:
            raise ValueError(f"{SLOWDOWN_ENV}={spec!r}: expected N or GLOB=N with an integer N >= 1") from None
        if n < 1:
            raise ValueError(f"{SLOWDOWN_ENV}={spec!r}: N must be >= 1")
        if fnmatch.fnmatchcase(name, pattern):
            return n
    return 1


def _seeded(*shape: int, device: torch.device, grad: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(SEED)
    return torch.randn(*shape, generator=gen).to(device).requires_grad_(grad)


def _reset_grads(*tensors: torch.Tensor, module: Optional[nn.Module] = None) -> Callable[[], None]:
    def reset() -> None:
        if module is not None:
            module.zero_grad(set_to_none=True)
        for t in tensors:
            t.grad = None

    return reset


def _attention_work(name: str, pass_: str, grid: int, device: torch.device) -> Work:
    import attentions

    from ..metrics._passes import Step

    torch.manual_seed(SEED)
    module = attentions.build(name, **ATTENTIONS[name]).to(device)
    x = _seeded(1, grid, grid, module.config.dim, device=device, grad=pass_ == "forward_backward")
    step = Step(module, module, x, pass_)
    return Work(step, step.reset, device)


def _op_step(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], pass_: str) -> tuple[Callable, Callable]:
    def step() -> None:
        if pass_ == "forward":
            with torch.no_grad():
                fn(*inputs)
        else:
            fn(*inputs).float().sum().backward()

    return step, _reset_grads(*inputs)


def _routed_work(pass_: str, device: torch.device) -> Work:
    """BRA stage-1 layout at 28×28: P = 7·7 regions, 16 tokens each, top-4 routed regions, C = 64, 2 heads."""
    from attentions.backends import choose
    from attentions.routing import routed_attention

    grad = pass_ == "forward_backward"
    B, P, n, C, topk = 1, 49, 16, 64, 4
    q, k, v = (_seeded(B, P, n, C, device=device, grad=grad) for _ in range(3))
    idx = torch.randint(0, P, (B, P, topk), generator=torch.Generator().manual_seed(SEED)).to(device)
    impl = choose("routed", "auto", q, "ci routed case").backend
    step, reset = _op_step(lambda q, k, v: routed_attention(q, k, v, idx, 2, C ** -0.5, impl=impl), (q, k, v), pass_)
    return Work(step, reset, device)


def _pixel_agent_work(pass_: str, device: torch.device) -> Work:
    """DBRA stage-1 layout at 28×28: 2 heads of 32, 784 pixels against 7·7 agents, one offset group, 28×28 RPE."""
    from attentions.backends import choose

    grad = pass_ == "forward_backward"
    m, H, d, Ns, G = 2, 28, 32, 49, 1
    q = _seeded(m, H * H, d, device=device, grad=grad)
    k, v = _seeded(m, Ns, d, device=device, grad=grad), _seeded(m, Ns, d, device=device, grad=grad)
    pos = (torch.rand(G, Ns, 2, generator=torch.Generator().manual_seed(SEED)) * 2 - 1).to(device)
    table = _seeded(m, 2 * H - 1, 2 * H - 1, device=device, grad=grad)
    if choose("pixel_agent", "auto", q, "ci pixel-agent case").backend == "triton":
        from attentions.kernels import pixel_agent_attention_triton as fn
    else:
        from attentions.deformable import pixel_to_agent_attention_torch as fn
    step, reset = _op_step(lambda q, k, v, t: fn(q, k, v, pos, t, G, H, H, 64 ** -0.5), (q, k, v, table), pass_)
    return Work(step, reset, device)


def _backbone_work(device: torch.device) -> Work:
    """One SGD training step of the tiny DBRA backbone at batch 2, 32² images, 8 classes."""
    from attentions import models

    torch.manual_seed(SEED)
    model = models.create_model("swap", attention="dbra", macro="tiny", img_size=32, num_classes=8).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = _seeded(2, 3, 32, 32, device=device)
    y = torch.tensor([1, 5], device=device)

    def step() -> None:
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return Work(step, lambda: opt.zero_grad(set_to_none=True), device)


def all_cases() -> list[Case]:
    """Every CI benchmark case, in a stable order."""
    cases = []
    for name in ATTENTIONS:
        for grid in GRIDS:
            for pass_ in PASSES:
                cases.append(Case(f"attention-{name}-{pass_}-{grid}", f"attention {name} {pass_}",
                                  {"attention": name, "pass": pass_, "grid": grid},
                                  lambda dev, n=name, p=pass_, g=grid: _attention_work(n, p, g, dev)))
    for pass_ in PASSES:
        cases.append(Case(f"op-routed_attention-{pass_}-28", f"op {pass_}", {"op": "routed_attention", "pass": pass_},
                          lambda dev, p=pass_: _routed_work(p, dev)))
        cases.append(Case(f"op-pixel_agent-{pass_}-28", f"op {pass_}", {"op": "pixel_agent", "pass": pass_},
                          lambda dev, p=pass_: _pixel_agent_work(p, dev)))
    cases.append(Case("backbone-dbra_tiny-train_step-32", "backbone", {"model": "swap/dbra/tiny", "batch": 2},
                      _backbone_work))
    return cases


def select(patterns: Sequence[str] = ()) -> list[Case]:
    """The cases whose name matches any glob in ``patterns`` (all cases when empty).

    Raises:
        ValueError: a pattern matches no case (naming it and the known names).
    """
    cases = all_cases()
    if not patterns:
        return cases
    for p in patterns:
        if not any(fnmatch.fnmatchcase(c.name, p) for c in cases):
            raise ValueError(f"--only {p!r} matches no benchmark; known: {', '.join(c.name for c in cases)}")
    return [c for c in cases if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]


def get_case(name: str) -> Case:
    for c in all_cases():
        if c.name == name:
            return c
    raise KeyError(f"unknown benchmark {name!r}")
