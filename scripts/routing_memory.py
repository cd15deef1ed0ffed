"""Peak CPU memory and time of forward + backward: the official expanded gather vs the lean torch path.

Runs ``bra`` (topk=4, where the gathered keys/values are 4x the tokens, and the stage-1 topk=1) and, when
``attentions/dbra.py`` exists and takes ``impl``, ``dbra`` (its stage-1 config, topk=4), each with
``impl="official"`` and ``impl="torch"``, at batch 8, 56x56, dim 64, 2 heads, n_win 7 (BiFormer/DeBiFormer stage 1
at 224²), and prints a Markdown table. For ``dbra`` the impl also selects the back attention (materialised vs
chunked) and the qkv projection (one 3C conv vs three C convs).

Method:
    * Peak memory: one forward + backward (``out.sum().backward()``) under ``torch.profiler.profile(
      profile_memory=True)``. Every CPU allocator call is recorded as an allocation event (+bytes on allocate,
      -bytes on free) with a timestamp; the events are sorted by time and summed, and the peak is the largest
      running sum, i.e. the most bytes held by tensors at once during the step, counted from the start of the
      step (the input, parameters and anything allocated earlier are excluded; gradients the step creates are
      included). Allocations inside kernels that go through the allocator (contiguous copies, workspaces) count;
      memory outside torch's allocator (oneDNN scratch pads, Python objects) does not. One warm-up step runs first.
    * Time: median wall time of ``--repeats`` forward + backward steps per impl after one warm-up, without the
      profiler. The ``official`` and ``torch`` steps of a case alternate (o, t, t, o, ...), so that on a shared
      machine both see the same load.
    * Ratio: peak of the ``official`` row divided by the peak of that row (so ``official`` is 1.00).

Usage::

    python scripts/routing_memory.py                 # the stage-1 table
    python scripts/routing_memory.py --batch 2 --repeats 3   # (dbra needs H, W multiples of 56)
    python scripts/routing_memory.py --only dbra     # the dbra rows alone
    python scripts/routing_memory.py --threads 1     # times that another job's load distorts less
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


IMPLS = ("official", "torch")


def make_step(name: str, config: dict, batch: int, size: int):
    """One training step of a fresh module (seed 0) on its own input: forward, ``out.sum().backward()``."""
    torch.manual_seed(0)
    module = attentions.build(name, **config)
    x = torch.randn(batch, size, size, config["dim"]).requires_grad_()

    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).sum().backward()

    return step


def measure(name: str, config: dict, batch: int, size: int, repeats: int) -> list[Row]:
    """One row per impl; the timed steps alternate between the impls so that both see the same machine load."""
    steps = {impl: make_step(name, dict(config, impl=impl), batch, size) for impl in IMPLS}
    for step in steps.values():
        step()  # warm-up: one-time allocations (weight caches, thread pools) stay out of the figures
    peaks = {impl: peak_bytes(step) for impl, step in steps.items()}
    times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    for i in range(repeats):
        for impl in IMPLS if i % 2 == 0 else IMPLS[::-1]:
            t0 = time.perf_counter()
            steps[impl]()
            times[impl].append((time.perf_counter() - t0) * 1e3)
    label = ", ".join(f"{k}={v}" for k, v in config.items() if k not in ("dim", "num_heads", "n_win"))
    return [Row(name, label, impl, peaks[impl], statistics.median(times[impl])) for impl in IMPLS]


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
    parser.add_argument("--only", choices=("bra", "dbra"), help="measure one mechanism's rows only")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: torch's); 1 is robust to a busy CPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name, config in cases():
        if args.only and name != args.only:
            continue
        rows.extend(measure(name, config, args.batch, args.size, args.repeats))
    print(
        f"forward + backward, batch {args.batch}, {args.size}x{args.size}, dim 64, 2 heads, n_win 7, float32, CPU, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
