#!/usr/bin/env python
"""Benchmark the DBRA/BRA hot-path kernels against the official-style torch path, the lean torch path and
FlexAttention, at DeBiFormer-S stage shapes (224² and 512², batch 1 and 64).

Per (problem, provider): forward and forward+backward time (median, ``triton.testing.do_bench``), peak memory
above the inputs (``torch.cuda.max_memory_allocated`` delta), achieved bandwidth on the bytes that must move
(inputs read once, outputs written once) as GB/s and as a share of a device-to-device copy measured by the script,
and the forward's max |error| against the float32 lean torch path. Prints Markdown tables and a check of the
H100 targets (512² batch 64: Triton fwd+bwd ≥ 3× faster and ≥ 5× less peak memory than official, not slower than
Flex), writes them to ``--out`` and every number to ``--out`` with ``.csv``.

    PYTHONPATH=$PWD python scripts/bench_kernels.py --out reports/kernels/bench-h100.md
    python scripts/bench_kernels.py --dry-run          # list the problems and providers, no tensors
    python scripts/bench_kernels.py --smoke --out x.md  # tiny shapes on CPU (Triton interpreter): a crash test
"""
from __future__ import annotations

import argparse
import csv
import datetime
import os
import sys
import time

import torch

if not torch.cuda.is_available():  # before attentions.kernels is imported (see tests/conftest.py)
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_kernels_providers as bp  # noqa: E402

COLUMNS = ["op", "res", "stage", "batch", "shape", "provider", "fwd_ms", "fwdbwd_ms", "fwd_peak_mib",
           "fwdbwd_peak_mib", "fwd_gbps", "fwdbwd_gbps", "fwdbwd_copy_pct", "max_err", "error"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", help="Markdown table path (a .csv with every number is written beside it)")
    p.add_argument("--res", default="512,224", help="input resolutions (224: n_win 7; 512: n_win 8)")
    p.add_argument("--batch", default="64,1")
    p.add_argument("--stages", default="1,2,3")
    p.add_argument("--ops", default=",".join(bp.OPS), help=f"subset of {bp.OPS}")
    p.add_argument("--providers", default=",".join(bp.PROVIDERS), help=f"subset of {bp.PROVIDERS}")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--warmup-ms", type=float, default=10.0, help="do_bench warm-up budget (ms)")
    p.add_argument("--rep-ms", type=float, default=50.0, help="do_bench measuring budget (ms)")
    p.add_argument("--budget-s", type=float, default=None, help="stop measuring after this many seconds; the "
                   "remaining cells are listed as skipped (problems run largest first)")
    p.add_argument("--flex-at", default="all", help="measure Flex only at these RESxBATCH (e.g. 512x64): each "
                   "problem costs a Flex compile of ~10-30 s")
    p.add_argument("--dry-run", action="store_true", help="list problems and providers only")
    p.add_argument("--smoke", action="store_true", help="tiny problems on whatever device there is")
    return p.parse_args(argv)


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


# -- measurement ---------------------------------------------------------------------------------------------------


def _time_ms(fn, args) -> float:
    if torch.cuda.is_available():
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=args.warmup_ms, rep=args.rep_ms, return_mode="median"))
    t0 = time.perf_counter()  # off CUDA this is a crash test (--smoke), not a measurement: one call
    fn()
    return (time.perf_counter() - t0) * 1e3


def _peak_mib(fn) -> float | None:
    """Peak allocated memory above what was allocated before the call (MiB); None off CUDA."""
    if not torch.cuda.is_available():
        fn()
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def copy_gbps() -> float | None:
    """Device-to-device copy bandwidth, (read + write bytes) / median time, on a 1 GiB buffer."""
    if not torch.cuda.is_available():
        return None
    import triton.testing

    src = torch.empty(2**30, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")
    del src, dst
    torch.cuda.empty_cache()
    return 2 * 2**30 / (ms * 1e-3) / 1e9


def measure(case, provider, inputs, ref, args, copy_bw) -> dict:
    """One table row; any failure becomes the row's ``error`` (OOM included), never an exception."""
    row = dict(op=case.op, res=case.res, stage=case.stage, batch=case.batch, shape=case.describe(),
               provider=provider)
    names = bp.grad_inputs(case)
    try:
        fn = bp.provider_fn(case, provider, compiled_flex=torch.cuda.is_available() and not args.smoke)
        with torch.no_grad():
            out = fn(inputs)
            row["max_err"] = float((out.float() - ref).abs().max())
            row["fwd_ms"] = _time_ms(lambda: fn(inputs), args)
            row["fwd_peak_mib"] = _peak_mib(lambda: fn(inputs))
        if args.smoke and not torch.cuda.is_available() and provider == "flex":
            raise NotImplementedError("FlexAttention has no backward on CPU")
        leaves = {n: inputs[n].detach().clone().requires_grad_() for n in names}
        grad_in = dict(inputs, **leaves)
        dout = torch.randn_like(out)

        def fwd_bwd():
            for t in leaves.values():
                t.grad = None
            fn(grad_in).backward(dout)

        row["fwdbwd_ms"] = _time_ms(fwd_bwd, args)
        row["fwdbwd_peak_mib"] = _peak_mib(fwd_bwd)
    except Exception as e:  # noqa: BLE001 - a failing cell is a result (e.g. OOM, Flex cannot compile)
        row["error"] = "OOM" if isinstance(e, torch.cuda.OutOfMemoryError) else f"{type(e).__name__}: {e}"[:160]
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    fwd_b, fb_b = bp.io_bytes(case, inputs)
    if row.get("fwd_ms"):
        row["fwd_gbps"] = fwd_b / (row["fwd_ms"] * 1e-3) / 1e9
    if row.get("fwdbwd_ms"):
        row["fwdbwd_gbps"] = fb_b / (row["fwdbwd_ms"] * 1e-3) / 1e9
        if copy_bw:
            row["fwdbwd_copy_pct"] = 100 * row["fwdbwd_gbps"] / copy_bw
    return row


# -- report --------------------------------------------------------------------------------------------------------


def _fmt(v, digits=3) -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def markdown(rows, header: list[str]) -> str:
    lines = header + ["", "| op | res | stage | B | shape | provider | fwd ms | fwd+bwd ms | fwd peak MiB | "
                      "fwd+bwd peak MiB | fwd+bwd GB/s | % copy | max err | note |",
                      "|" + "---|" * 14]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in (
            "op", "res", "stage", "batch", "shape", "provider", "fwd_ms", "fwdbwd_ms", "fwd_peak_mib",
            "fwdbwd_peak_mib", "fwdbwd_gbps", "fwdbwd_copy_pct", "max_err")) + f" | {r.get('error', '')} |")
    return "\n".join(lines + ["", *targets(rows)])


def targets(rows) -> list[str]:
    """The H100 targets at 512² batch 64, per problem: speed-up and memory ratio vs official, speed vs Flex."""
    out = ["### Targets (512², batch 64): Triton fwd+bwd ≥ 3× faster, ≥ 5× less peak memory than official, "
           "not slower than Flex", "", "| op | stage | × faster than official | × less memory | Flex / Triton "
           "time | verdict |", "|---|---|---|---|---|---|"]
    by = {(r["op"], r["res"], r["stage"], r["batch"], r["provider"]): r for r in rows}
    for (op, res, stage, batch, prov), tri in sorted(by.items()):
        if prov != "triton" or res != 512 or batch != 64:
            continue
        off, flex = by.get((op, res, stage, batch, "official"), {}), by.get((op, res, stage, batch, "flex"), {})
        speed = _ratio(off.get("fwdbwd_ms"), tri.get("fwdbwd_ms"))
        mem = _ratio(off.get("fwdbwd_peak_mib"), tri.get("fwdbwd_peak_mib"))
        vs_flex = _ratio(flex.get("fwdbwd_ms"), tri.get("fwdbwd_ms"))
        ok = [speed is not None and speed >= 3, mem is not None and mem >= 5, vs_flex is None or vs_flex >= 1]
        verdict = "met" if all(ok) else "missed: " + ", ".join(
            n for n, good in zip(("speed", "memory", "vs Flex"), ok) if not good)
        if vs_flex is None:
            verdict += " (Flex not measured)"
        out.append(f"| {op} | {stage} | {_fmt(speed)} | {_fmt(mem)} | {_fmt(vs_flex)} | {verdict} |")
    return out


def _ratio(a, b):
    return a / b if a and b else None


def environment(args, copy_bw) -> list[str]:
    import triton

    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (Triton interpreter)"
    return [f"# Kernel benchmark: {dev}", "",
            f"- date {datetime.datetime.now().isoformat(timespec='seconds')}; torch {torch.__version__}; "
            f"triton {triton.__version__}; dtype {args.dtype}",
            f"- command: `python scripts/bench_kernels.py {' '.join(sys.argv[1:])}`",
            f"- device-to-device copy bandwidth: {_fmt(copy_bw)} GB/s (read + write)",
            "- times: median of do_bench (L2 flushed), fwd under no_grad; peak: max_memory_allocated above the "
            "inputs; GB/s: bytes that must move (inputs read once, outputs written once) / time; max err: "
            "forward vs float32 lean torch; Flex time includes building the block mask from the routing"
            if torch.cuda.is_available() else "- CPU smoke run: one call per cell, a crash test, not a measurement"]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        todo = bp.cases([224], [1], [1], args.ops.split(","), tiny=True)
    else:
        todo = bp.cases(_ints(args.res), _ints(args.batch), _ints(args.stages), args.ops.split(","))
    providers = args.providers.split(",")
    if args.dry_run:
        for c in todo:
            print(f"{c.op:6s} {c.res} stage {c.stage} batch {c.batch:3d}  {c.describe():40s} {providers}")
        return 0
    for knob in ("recompile_limit", "cache_size_limit"):  # one Flex graph per problem; never fall back to eager
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 256)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    copy_bw = copy_gbps()
    header = environment(args, copy_bw)
    rows, start = [], time.monotonic()
    flex_at = None if args.flex_at == "all" else {tuple(map(int, x.split("x"))) for x in args.flex_at.split(",")}
    for case in todo:
        inputs = bp.make_inputs(case, dtype, device)
        ref = bp.reference(case, inputs)
        for prov in providers:
            skip = None
            if args.budget_s is not None and time.monotonic() - start > args.budget_s:
                skip = "skipped: --budget-s reached"
            elif prov == "flex" and flex_at is not None and (case.res, case.batch) not in flex_at:
                skip = f"skipped: --flex-at {args.flex_at}"
            if skip:
                rows.append(dict(op=case.op, res=case.res, stage=case.stage, batch=case.batch,
                                 shape=case.describe(), provider=prov, error=skip))
                continue
            rows.append(measure(case, prov, inputs, ref, args, copy_bw))
            print(" ".join(f"{k}={_fmt(v)}" for k, v in rows[-1].items()), flush=True)
        del inputs, ref
        write(rows, header, args.out)  # after every problem: a run cut short still leaves its table
    print(markdown(rows, header))
    return 0


def write(rows, header, out) -> None:
    if not out:
        return
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(markdown(rows, header) + "\n")
    with open(os.path.splitext(out)[0] + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    sys.exit(main())
