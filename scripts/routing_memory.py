"""Peak CPU memory and time of forward + backward: the official expanded gather vs the lean torch path.

Runs ``bra`` (topk=4, where the gathered keys/values are 4x the tokens, and the stage-1 topk=1) and, when
``attentions/dbra.py`` exists and takes ``impl``, ``dbra`` (its stage-1 config, topk=4), each with
``impl="official"`` and ``impl="torch"``, at batch 8, 56x56, dim 64, 2 heads, n_win 7 (BiFormer/DeBiFormer stage 1
at 224²), and prints a Markdown table.

Method:
    * Peak memory: one forward + backward (``out.sum().backward()``) under ``torch.profiler.profile(
      profile_memory=True)``. Every CPU allocator call is recorded as an allocation event (+bytes on allocate,
      -bytes on free) with a timestamp; the events are sorted by time and summed, and the peak is the largest
      running sum, i.e. the most bytes held by tensors at once during the step, counted from the start of the
      step (the input, parameters and anything allocated earlier are excluded; gradients the step creates are
      included). Allocations inside kernels that go through the allocator (contiguous copies, workspaces) count;
      memory outside torch's allocator (oneDNN scratch pads, Python objects) does not. One warm-up step runs first.
    * Time: median wall time of ``--repeats`` forward + backward steps after one warm-up, without the profiler.
    * Ratio: peak of the ``official`` row divided by the peak of that row (so ``official`` is 1.00).

Usage::

    python scripts/routing_memory.py                 # the stage-1 table
    python scripts/routing_memory.py --batch 2 --size 28 --repeats 3
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import statistics
import time

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

import attentions


@dataclasses.dataclass
class Row:
    mechanism: str
    config: str
    impl: str
    peak_bytes: int
    median_ms: float


def peak_bytes(step) -> int:
    """Most bytes held by tensors at once while ``step()`` runs (allocation events of the profiler)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    events.sort()  # by time; at equal times frees (negative) first, so the peak is not overstated
    held = peak = 0
    for _, size in events:
        held += size
        peak = max(peak, held)
    return peak


def median_ms(step, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure(name: str, config: dict, batch: int, size: int, repeats: int) -> Row:
    torch.manual_seed(0)
    module = attentions.build(name, **config)
    x = torch.randn(batch, size, size, config["dim"]).requires_grad_()

    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).sum().backward()

    step()  # warm-up: one-time allocations (weight caches, thread pools) stay out of the figures
    peak = peak_bytes(step)
    label = ", ".join(f"{k}={v}" for k, v in config.items() if k not in ("impl", "dim", "num_heads", "n_win"))
    return Row(name, label, config["impl"], peak, median_ms(step, repeats))


def cases() -> list[tuple[str, dict]]:
    base = dict(dim=64, num_heads=2, n_win=7)
    out = [("bra", dict(base, topk=4)), ("bra", dict(base, topk=1))]
    if importlib.util.find_spec("attentions.dbra") is not None:
        dbra = attentions.resolve("dbra")
        if "impl" in {f.name for f in dataclasses.fields(dbra.Config)}:
            out.append(("dbra", dict(base, topk=4)))
    return out


def table(rows: list[Row]) -> str:
    lines = [
        "| mechanism | config | impl | peak MiB | peak ratio (official / this) | median ms |",
        "|---|---|---|---:|---:|---:|",
    ]
    official = {(r.mechanism, r.config): r.peak_bytes for r in rows if r.impl == "official"}
    for r in rows:
        ratio = official[(r.mechanism, r.config)] / r.peak_bytes
        lines.append(
            f"| {r.mechanism} | {r.config} | {r.impl} | {r.peak_bytes / 2**20:.1f} | {ratio:.2f} | {r.median_ms:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=56, help="H = W of the input")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per row (median reported)")
    args = parser.parse_args()
    rows = []
    for name, config in cases():
        for impl in ("official", "torch"):
            rows.append(measure(name, dict(config, impl=impl), args.batch, args.size, args.repeats))
    print(
        f"forward + backward, batch {args.batch}, {args.size}x{args.size}, dim 64, 2 heads, n_win 7, float32, CPU, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
