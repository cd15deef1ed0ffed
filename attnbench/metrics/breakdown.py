"""Metric ``breakdown``: where a cell's time goes, part by part of its cost model, beside each part's MACs.

The cell's pass (see :mod:`attnbench.metrics._passes`) runs ``repeats`` times under ``torch.profiler``, each call
inside an ``attnbench.breakdown.step`` scope, on its own module and input (the latency samples are never profiled).
The mechanism's ``attentions.<name>.<part>`` scopes (:mod:`attentions.profiling`) split each call's time:

* every profiler event belongs to the innermost part scope around it; time outside every scope (layout copies,
  padding, region partitioning, the Python and dispatch time between operators) is ``other``;
* in a backward pass, autograd runs the backward of each forward operator as one
  ``autograd::engine::evaluate_function`` event; it belongs to the part of the forward operator that recorded
  it (matched by the autograd sequence number), unless a part scope opens inside it (the lean Functions'
  recomputations);
* so, per call, the parts plus ``other`` are the step scope's duration (``breakdown_total_ms``), exactly; the
  ``untraced`` column is the part of ``other`` that lies between operators (no event at all).

On CUDA a part's time is its kernels' time (each kernel belongs to the part of the operator that launched it),
and ``other`` is the rest of the synchronised step: kernels outside every scope, launch gaps and idle time.

MACs and bytes per part (:mod:`attnbench.metrics._part_counts`) come from one counted forward at the cell's batch;
``breakdown_macs_<part>`` summed over the parts equals ``cost(H, W).total`` × batch where ``cost`` exists. With a
forward+backward pass the step's FLOPs are taken as 3× the forward's (the backward of a product costs two
products), for the achieved GFLOP/s; the arithmetic intensity (FLOPs per byte of compulsory traffic) is the
forward's. The report divides the achieved rate by the run's probed peak (``machine_peak`` in the manifest).

The profiler slows every operator down by a few microseconds, so profiled times are larger than the latency
metric's, most for many small operators: ``breakdown_profiled_over_wall`` (profiled step / an unprofiled call,
timed interleaved with the profiled ones) says by how much.

Options: ``repeats`` (profiled calls, default 2; the columns are their means; as many unprofiled calls are timed
before them, which also warm the cell up), ``warmup`` (more unprofiled calls first, default 1). With the counted
forward that is 2 + 2 × ``repeats`` calls of the pass: on the big cells of a CPU sweep as long as the latency
samples, so the default keeps ``repeats`` low.
"""
from __future__ import annotations

import statistics
import time
from collections import defaultdict
from typing import Annotated, Any

import torch
from pydantic import Field

from attentions.cost import PARTS
from attentions.profiling import part_of_scope

from ._part_counts import OTHER, count_parts
from ._passes import Step, first_call, maybe_compile
from ..core.validation import SettingsModel
from ._settings import read_settings
from .base import MetricContext

__all__ = ["DEFAULTS", "STEP_SCOPE", "attribute", "measure", "profile_step"]



class Settings(SettingsModel):
    """``settings.breakdown``: profiled steps, after ``warmup`` unprofiled ones."""

    repeats: Annotated[int, Field(ge=1)] = 2
    warmup: Annotated[int, Field(ge=0)] = 1


DEFAULTS: dict[str, Any] = Settings().model_dump()
STEP_SCOPE = "attnbench.breakdown.step"
_BACKWARD = "autograd::engine::evaluate_function:"


def _own_kernel_us(event) -> float:
    return sum(k.duration for k in getattr(event, "kernels", ()) or ())


def attribute(step_event, other_roots=()) -> tuple[dict[str, float], dict[str, float], float]:
    """Split one step event's time over the parts: (cpu µs per part, kernel µs per part, untraced µs).

    Every event's own time (its duration less its children's) goes to the innermost part around it, so the cpu
    µs add up to the step's duration. ``other_roots`` are top-level events of other threads inside the step (the
    CUDA autograd thread's backward); their kernels are attributed the same way, their cpu time is not (it
    overlaps the step's own).
    """
    cpu: dict[str, float] = defaultdict(float)
    kernels: dict[str, float] = defaultdict(float)
    part_of_seq: dict[int, str] = {}

    def walk(event, owner: str, count_cpu: bool) -> None:
        name = event.name
        own = part_of_scope(name)
        if own is None and name.startswith(_BACKWARD):
            own = part_of_seq.get(event.sequence_nr)
        elif own is None and event.sequence_nr >= 0:
            part_of_seq.setdefault(event.sequence_nr, owner)
        owner = own or owner
        children = sorted(event.cpu_children, key=lambda e: e.time_range.start)
        if count_cpu:
            cpu[owner] += event.time_range.elapsed_us() - sum(c.time_range.elapsed_us() for c in children)
        kernels[owner] += _own_kernel_us(event)
        for child in children:
            walk(child, owner, count_cpu)

    walk(step_event, OTHER, True)
    untraced = step_event.time_range.elapsed_us() - sum(c.time_range.elapsed_us() for c in step_event.cpu_children)
    for root in sorted(other_roots, key=lambda e: e.time_range.start):
        walk(root, OTHER, False)
    return dict(cpu), dict(kernels), untraced


def profile_step(step: Step, repeats: int, cuda: bool) -> dict[str, Any]:
    """Profile ``repeats`` calls of ``step``, each timed unprofiled right before; per-call means per part."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from ._cpu_memory import _quiet_stderr

    walls = []
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof = profile(activities=activities)
    for _ in range(repeats):  # interleaved: one unprofiled call, one profiled call
        step.reset()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - t0)
    with _quiet_stderr():
        prof.start()
    try:
        torch.zeros(1).add_(1)  # the profiler's first op pays its own start-up, not the first step
        for _ in range(repeats):
            step.reset()
            with record_function(STEP_SCOPE):
                step()
                if cuda:
                    torch.cuda.synchronize()
    finally:
        with _quiet_stderr():
            prof.stop()
    events = prof.events()
    steps = sorted((e for e in events if e.name == STEP_SCOPE), key=lambda e: e.time_range.start)
    if len(steps) != repeats:
        raise RuntimeError(f"breakdown: expected {repeats} profiled steps, found {len(steps)} in the trace")
    step_thread = steps[0].thread
    roots = [e for e in events if e.cpu_parent is None and e.thread != step_thread and e.name != STEP_SCOPE]
    cpu_sum: dict[str, float] = defaultdict(float)
    kernel_sum: dict[str, float] = defaultdict(float)
    total = untraced = 0.0
    for s in steps:
        inside = [r for r in roots if s.time_range.start <= r.time_range.start <= s.time_range.end]
        cpu, kernels, gap = attribute(s, inside)
        for k, v in cpu.items():
            cpu_sum[k] += v
        for k, v in kernels.items():
            kernel_sum[k] += v
        total += s.time_range.elapsed_us()
        untraced += gap
    per_part = dict(kernel_sum) if cuda else dict(cpu_sum)
    if cuda:  # the rest of the synchronised step: kernels outside scopes, launch gaps, idle time
        per_part[OTHER] = total - sum(v for k, v in per_part.items() if k != OTHER)
    return {"per_part_us": {k: v / repeats for k, v in per_part.items()}, "total_us": total / repeats,
            "untraced_us": untraced / repeats, "wall_s": statistics.median(walls)}


def measure(ctx: MetricContext) -> dict[str, Any]:
    """The ``breakdown_*`` columns of the cell (see the module docstring)."""
    opts = read_settings(ctx, "breakdown", Settings)
    started = time.perf_counter()
    module = ctx.make_module()
    counts = count_parts(module, ctx.make_input(requires_grad=False))
    step = Step(maybe_compile(module, ctx.mode), module, ctx.make_input(), ctx.pass_)
    if ctx.mode == "compile":
        first_call(step, ctx.attention)
    for _ in range(opts["warmup"]):
        step.reset()
        step()
    prof = profile_step(step, opts["repeats"], ctx.device.type == "cuda")
    total_us = prof["total_us"]
    flop_factor = 2 * (3 if ctx.pass_ == "forward_backward" else 1)
    macs_total = sum(counts.macs.values())
    bytes_total = sum(counts.bytes.values())
    row: dict[str, Any] = {
        "breakdown_total_ms": total_us / 1e3,
        "breakdown_untraced_ms": prof["untraced_us"] / 1e3,
        "breakdown_wall_ms": prof["wall_s"] * 1e3,
        "breakdown_profiled_over_wall": total_us / 1e6 / prof["wall_s"] if prof["wall_s"] > 0 else None,
        "breakdown_timer": "cuda_kernels" if ctx.device.type == "cuda" else "cpu_profiler",
        "breakdown_repeats": opts["repeats"],
        "breakdown_macs": macs_total,
        "breakdown_bytes": bytes_total,
        "breakdown_gflops": flop_factor * macs_total / total_us / 1e3 if total_us > 0 else None,
        "breakdown_intensity": 2 * macs_total / bytes_total if bytes_total else None,
    }
    for name in (*PARTS, OTHER):
        us = prof["per_part_us"].get(name, 0.0)
        macs, nbytes = counts.macs.get(name, 0), counts.bytes.get(name, 0)
        if name != OTHER and not macs and not us:
            continue  # a part this mechanism does not have
        row[f"breakdown_{name}_ms"] = us / 1e3
        row[f"breakdown_{name}_share"] = us / total_us if total_us > 0 else None
        row[f"breakdown_macs_{name}"] = macs
        row[f"breakdown_macs_share_{name}"] = macs / macs_total if macs_total else None
        row[f"breakdown_gflops_{name}"] = flop_factor * macs / us / 1e3 if us > 0 and macs else None
        row[f"breakdown_intensity_{name}"] = 2 * macs / nbytes if nbytes and macs else None
    row["breakdown_s"] = time.perf_counter() - started  # what the metric added to the cell
    return row
