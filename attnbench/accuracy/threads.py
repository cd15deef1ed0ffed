"""How many CPU threads an accuracy job uses: ``settings.accuracy.threads`` (an int, or ``"auto"``).

The count is set with ``torch.set_num_threads`` for training, evaluation and the model-latency column, and
restored afterwards (the engine measures other metrics in the same process). Why a setting at all: on a shared
CPU, intra-op threads that wait for a busy core stall every op of a training step, so two threads can train ten
times slower than one; on an idle many-core machine all cores are fastest. Which one holds is a property of the
machine at the time of the run, so ``auto`` measures it instead of guessing.

``auto`` (the default) decides by a cheap rule, in this order:

1. **CUDA device**: the process default (``torch.get_num_threads()``); the GPU does the work, and the CPU threads
   only launch kernels. No probe. (``how``: ``auto-cuda``)
2. **One of several training processes** (``WORLD_SIZE`` > 1, torchrun or a multi-node job): the usable cores
   (the CPU affinity mask) divided by the processes on this node (``LOCAL_WORLD_SIZE``), at least 1. No probe:
   ranks probing at once would time each other, and every rank must choose the same. (``auto-ddp``)
3. **A process default of one thread** (one usable core, or ``OMP_NUM_THREADS=1``): 1. (``auto-one-core``)
4. **A loaded machine**: the other work is estimated as the larger of the processes other than this one that
   are running right now and the 1-minute load average less one (this process's own share), both read from
   ``/proc`` by :mod:`attnbench.core.machine_load`; the free threads F are the machine's cores less that, rounded
   down, and at most the process default (a batch job confined to a few cores of a busy node keeps its own).
   F < 2: 1, without a probe. Contended threads are the case where more threads are
   catastrophically slower (measured here: 10-100x per training step), and a probe would pay for those slow
   steps itself. (``auto-loaded``)
5. **Otherwise a probe** over the F free threads: the candidates are 1, F/2 and F (distinct). A copy of the
   model takes training steps (forward, cross-entropy, backward; no optimizer step) on a random batch of
   ``min(batch_size, 16)`` images at ``img_size``: one untimed warm-up step, then rounds in which every
   candidate times one step, the order reversed every other round so that a change in the machine's load hits
   all candidates alike; 3 rounds, fewer when the next round would end past a 10 s budget (one round always
   runs). A candidate over twice as slow as the fastest in the first round is not timed again: it is out of
   the running, and its steps are the expensive ones. So the probe costs at most 1 + 3 × 3 steps of the small
   batch. The pick is the fewest threads whose median step time is within 5% of the fastest: a tie goes to
   fewer threads, which leave cores to other work and suffer less from it. (``auto-probe``; the medians are
   kept as ``probe_ms``)

The probe runs on a deep copy of the model under a forked random state, so the trained model, its BatchNorm
statistics and every later random draw are exactly those of a run with the count given explicitly.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import statistics
import time
from typing import Optional, Union

import torch
from torch import nn

from ..core.torch_threads import use_threads  # re-exported: the accuracy code imports it from here

__all__ = ["ThreadChoice", "check_threads", "choose_threads", "use_threads", "usable_cores", "other_load", "probe",
           "PROBE_BUDGET_S", "PROBE_ROUNDS", "PROBE_MAX_BATCH", "TIE_FRACTION", "DROP_FACTOR"]

#: wall-clock budget of the probe (seconds); at least one timed round runs whatever it takes
PROBE_BUDGET_S = 10.0
#: timed rounds of the probe (each candidate one step per round)
PROBE_ROUNDS = 3
#: largest probe batch (the recipe's batch when smaller)
PROBE_MAX_BATCH = 16
#: a candidate within this fraction of the fastest median counts as a tie (fewer threads win ties)
TIE_FRACTION = 0.05
#: after the first round, a candidate slower than this factor times the fastest is not timed again
DROP_FACTOR = 2.0


@dataclasses.dataclass(frozen=True)
class ThreadChoice:
    """The thread count of a job and how it was chosen.

    Attributes:
        threads: passed to ``torch.set_num_threads``.
        how: ``set`` (the settings gave the number), ``auto-cuda``, ``auto-ddp``, ``auto-one-core``,
            ``auto-loaded`` or ``auto-probe`` (see the module docstring).
        probe_ms: candidate -> median step time (ms) of the probe; None without a probe.
    """

    threads: int
    how: str
    probe_ms: Optional[dict[str, float]] = None


def check_threads(value: Union[int, str], where: str = "settings.accuracy.threads") -> None:
    """Raise ``ValueError`` naming ``where`` unless ``value`` is an int >= 1 or ``"auto"``."""
    ok_int = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if not (ok_int or value == "auto"):
        raise ValueError(f"{where}={value!r} is not allowed: expected a positive int (threads for training and "
                         f"the model latency) or 'auto' (the fastest on this machine, measured)")


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def other_load() -> float:
    """Busy cores other than this process's now (:func:`attnbench.core.machine_load.other_load`, the one load rule)."""
    from ..core import machine_load

    return machine_load.other_load()


def choose_threads(setting: Union[int, str], model: nn.Module, device: torch.device, img_size: int,
                   batch_size: int, in_chans: int = 3) -> ThreadChoice:
    """The thread count for ``setting`` (an int, or ``"auto"`` decided by the rule of the module docstring)."""
    check_threads(setting)
    if setting != "auto":
        return ThreadChoice(int(setting), "set")
    if torch.device(device).type == "cuda":
        return ThreadChoice(torch.get_num_threads(), "auto-cuda")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
        return ThreadChoice(max(1, usable_cores() // max(local, 1)), "auto-ddp")
    default = torch.get_num_threads()
    if default <= 1:
        return ThreadChoice(1, "auto-one-core")
    free = min(default, int((os.cpu_count() or 1) - other_load()))
    if free < 2:
        return ThreadChoice(1, "auto-loaded")
    candidates = sorted({1, free // 2, free} - {0})
    medians = probe(model, candidates, img_size, max(2, min(batch_size, PROBE_MAX_BATCH)), in_chans)
    best = min(medians.values())
    pick = min(n for n, ms in medians.items() if ms <= best * (1 + TIE_FRACTION))
    return ThreadChoice(pick, "auto-probe", {str(n): round(ms, 3) for n, ms in medians.items()})


def probe(model: nn.Module, candidates: list[int], img_size: int, batch: int, in_chans: int = 3,
          rounds: Optional[int] = None, budget_s: Optional[float] = None) -> dict[int, float]:
    """Candidate thread count -> median wall time (ms) of one CPU training step of a copy of ``model``.

    Interleaved: one warm-up step (the first candidate), then rounds of one timed step per candidate, the order
    reversed every other round; after the first round only the candidates within ``DROP_FACTOR`` of the fastest.
    The model, the global random state and the thread count are left as they were.
    """
    rounds = PROBE_ROUNDS if rounds is None else rounds
    budget_s = PROBE_BUDGET_S if budget_s is None else budget_s
    previous = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        work = copy.deepcopy(model).cpu().train()
        x = torch.randn(batch, in_chans, img_size, img_size)
        num_classes = _num_classes(work, x[:2])
        y = torch.randint(0, max(num_classes, 1), (batch,))

        def step(n: int) -> float:
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            out = work(x)
            loss = nn.functional.cross_entropy(out, y) if out.dim() == 2 and num_classes > 0 else out.float().mean()
            loss.backward()
            seconds = time.perf_counter() - t0
            work.zero_grad(set_to_none=True)
            return seconds

        samples: dict[int, list[float]] = {n: [] for n in candidates}
        try:
            step(candidates[0])  # first-call costs (allocator, autograd graph caches) are not the threads'
            start, timing = time.perf_counter(), list(candidates)
            for r in range(rounds):
                t_round = time.perf_counter()
                for n in (timing if r % 2 == 0 else timing[::-1]):
                    samples[n].append(step(n))
                if r == 0:  # over twice as slow as the fastest: out of the running, not timed again
                    fastest = min(s[0] for s in samples.values())
                    timing = [n for n in timing if samples[n][0] <= DROP_FACTOR * fastest]
                # stop early when another round would overrun the budget (one round always runs)
                spent, last = time.perf_counter() - start, time.perf_counter() - t_round
                if spent + last > budget_s:
                    break
        finally:
            torch.set_num_threads(previous)
    return {n: 1e3 * statistics.median(s) for n, s in samples.items()}


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    """Logit count of ``model`` (its ``num_classes`` attribute, else one eval forward of two images)."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    was_training = model.training
    with torch.no_grad():
        out = model.eval()(x)
    model.train(was_training)
    return int(out.shape[-1]) if out.dim() == 2 else 0
