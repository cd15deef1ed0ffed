"""Paired, interleaved timing: a benchmark against the reference workload, or base against head.

Absolute times differ between runners and drift with the load on one runner; a ratio of two workloads timed in
alternation in the same job moves much less (Kalibera & Jones, ISMM 2013; asv ``continuous``). One *round* times a
block of calls of each contender back to back, the order alternating between rounds (A B, B A, A B, …) so neither
side always runs right after the other. Blocks are sized to about ``block_s`` each so that a single scheduler slice
lands in both sides' blocks of a round with similar weight, and so that a sub-millisecond case is not timed per
call against a coarse clock. The per-round ratio is the paired statistic (:func:`attnbench.core.stats.paired_ratio`).
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch

__all__ = ["Reference", "time_block", "estimate_call_s", "block_calls", "paired_rounds", "BLOCK_S", "ROUNDS",
           "WARMUP"]

#: target seconds of one block of calls
BLOCK_S = 0.02
#: rounds (paired samples) per benchmark
ROUNDS = 15
#: untimed calls before the estimate
WARMUP = 3


class Reference:
    """The fixed reference workload: a 256×256 float32 matmul and a 2-head SDPA over 196 tokens of 32 channels.

    Chosen to exercise what the benchmarks spend their time in (GEMM and fused attention) at a fixed size, so the
    ratio benchmark / reference cancels the runner's overall speed. Seeded; on the benchmarks' device.
    """

    description = "matmul 256x256x256 + SDPA (1, 2, 196, 32), float32"

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        gen = torch.Generator().manual_seed(0)
        self.a = torch.randn(256, 256, generator=gen).to(self.device)
        self.b = torch.randn(256, 256, generator=gen).to(self.device)
        self.q = torch.randn(1, 2, 196, 32, generator=gen).to(self.device)

    def __call__(self) -> None:
        with torch.no_grad():
            self.a @ self.b
            torch.nn.functional.scaled_dot_product_attention(self.q, self.q, self.q)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def time_block(fn: Callable[[], None], n: int) -> float:
    """Seconds per call of ``n`` back-to-back calls of ``fn``."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def estimate_call_s(fn: Callable[[], None], warmup: int = WARMUP, samples: int = 3) -> float:
    """Median seconds of one call after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(time_block(fn, 1) for _ in range(samples))


def block_calls(call_s: float, block_s: float = BLOCK_S) -> int:
    """Calls per block so that a block lasts about ``block_s`` (at least one)."""
    return max(1, math.ceil(block_s / max(call_s, 1e-9)))


def paired_rounds(a: Callable[[], float], b: Callable[[], float],
                  rounds: int = ROUNDS) -> tuple[list[float], list[float]]:
    """``rounds`` interleaved measurements of ``a`` and ``b`` (each returns its seconds per call), order alternating.

    Returns:
        (a_times, b_times), paired by round.
    """
    if rounds < 2:
        raise ValueError(f"rounds={rounds} must be >= 2")
    ta, tb = [], []
    for r in range(rounds):
        if r % 2 == 0:
            ta.append(a())
            tb.append(b())
        else:
            tb.append(b())
            ta.append(a())
    return ta, tb
