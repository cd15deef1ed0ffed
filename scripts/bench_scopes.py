"""Do the parts' profiler scopes cost anything when no profiler runs? A paired, interleaved benchmark.

For each attention, the module of this checkout (with its ``attentions.profiling.part`` scopes) and the same
module from a base revision without them (``--base``, default ``main``; its ``attentions/`` package is exported
with ``git archive`` and imported under another name), with the same weights and input, are timed in rounds
A B A B ... (each sample a block of back-to-back forward calls of at least ``--min-block-ms``). Every round gives
one ratio A/B; the median ratio and its 95% bootstrap interval (attnbench.core.stats.paired_ratio) say the cost of the
scopes. The noise floor is the same procedure on two instances of this checkout's module (A/A'): an overhead
is measurable only if it stands out of that.

    python scripts/bench_scopes.py                   # the five attentions at 14x14, batch 1, forward
    python scripts/bench_scopes.py --grid 28 --rounds 60 --base 56686c1
"""
from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import attentions  # noqa: E402
from attnbench.core import stats  # noqa: E402

CONFIGS = {"mhsa": {}, "bra": {"auto_pad": True}, "dbra": {"auto_pad": True}, "dat": {}, "agent": {}}
BASE_PACKAGE = "attentions_base"


def import_base(rev: str, into: Path):
    """The ``attentions`` package of git revision ``rev``, imported as :data:`BASE_PACKAGE`."""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "attentions"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    (into / "attentions").rename(into / BASE_PACKAGE)
    sys.path.insert(0, str(into))
    for name in CONFIGS:  # the registry imports its modules as "attentions.<name>": register the base's here
        importlib.import_module(f"{BASE_PACKAGE}.{name}")
    return importlib.import_module(BASE_PACKAGE)


def _block(module: torch.nn.Module, x: torch.Tensor, calls: int) -> Callable[[], float]:
    def run() -> float:
        module(x)  # re-warm: every sample follows one call of its own module (as the latency metric pairs)
        t0 = time.perf_counter()
        for _ in range(calls):
            module(x)
        return (time.perf_counter() - t0) / calls
    return run


def paired(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor, rounds: int, min_block_ms: float):
    """(median ratio a/b with its 95% interval, median ms of a, of b) over interleaved rounds."""
    with torch.no_grad():
        for m in (a, b):
            for _ in range(3):
                m(x)
        t0 = time.perf_counter()
        a(x)
        calls = max(1, int(min_block_ms / 1e3 / max(time.perf_counter() - t0, 1e-6)))
        run_a, run_b = _block(a, x, calls), _block(b, x, calls)
        ta, tb = [], []
        for _ in range(rounds):
            ta.append(run_a())
            tb.append(run_b())
    ratio = stats.paired_ratio(ta, tb)
    return ratio, 1e3 * float(torch.tensor(ta).median()), 1e3 * float(torch.tensor(tb).median())


def measure(names, grid: int, rounds: int, min_block_ms: float, base) -> list[dict]:
    rows = []
    for name in names:
        cfg = dict(dim=64, num_heads=2, **CONFIGS.get(name, {}))
        torch.manual_seed(0)
        head = attentions.build(name, **cfg).eval()
        twin = attentions.build(name, **cfg).eval()
        twin.load_state_dict(head.state_dict())
        old = base.build(name, **cfg).eval()
        old.load_state_dict(head.state_dict())
        x = torch.randn(1, grid, grid, 64)
        with torch.no_grad():
            assert torch.equal(head(x), old(x)), f"{name}: the base revision computes something else"
        scopes, ms_head, ms_base = paired(head, old, x, rounds, min_block_ms)
        noise, _, _ = paired(head, twin, x, rounds, min_block_ms)
        rows.append({"attention": name, "grid": grid, "ms_head": ms_head, "ms_base": ms_base,
                     "scopes": scopes, "noise": noise})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision without the scopes (default: main)")
    parser.add_argument("--grid", type=int, default=14)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--min-block-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("names", nargs="*", default=list(CONFIGS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        base = import_base(args.base, Path(tmp))
        rows = measure(args.names, args.grid, args.rounds, args.min_block_ms, base)
    print(f"| attention | grid | ms/call with scopes | without (base {args.base}) | ratio with/without [95%] | "
          "noise floor A/A' [95%] |")
    print("|---|---|--:|--:|--:|--:|")
    for r in rows:
        s, n = r["scopes"], r["noise"]
        print(f"| {r['attention']} | {r['grid']}² | {r['ms_head']:.3f} | {r['ms_base']:.3f} | "
              f"{s.estimate:.3f} [{s.low:.3f}–{s.high:.3f}] | {n.estimate:.3f} [{n.low:.3f}–{n.high:.3f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
