#!/usr/bin/env python3
"""Benchmark the DBRA/BRA hot-path kernels against the official-style torch path, the lean torch path and
FlexAttention, at DeBiFormer-S stage shapes (224² and 512², batch 1 and 64, uniform and skewed routing).

Per (problem, provider): forward and forward+backward time (median, ``triton.testing.do_bench``), Flex's
block-mask build time on its own, peak memory above the inputs (previous gradients freed before the baseline),
TFLOP/s and GB/s against a dense matmul and a device copy measured in the same run, the output's and every
gradient's error against the float32 lean torch path, and whether two fwd+bwd runs give bit-identical gradients.
Prints Markdown tables and a check of the H100 targets (512² batch 64: Triton fwd+bwd ≥ 3× faster and ≥ 5× less
peak memory than official, not slower than Flex), writes them to ``--out`` (after every problem) and every number
to ``--out`` with ``.csv``.

    PYTHONPATH=$PWD python3 scripts/bench_kernels.py --out reports/kernels/bench-h100.md
    python3 scripts/bench_kernels.py --dry-run          # list the problems and providers, no tensors
    python3 scripts/bench_kernels.py --smoke --out x.md  # tiny shapes on CPU (Triton interpreter): a crash test
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

COLUMNS = ["op", "res", "stage", "batch", "routing", "shape", "provider", "fwd_ms", "fwdbwd_ms", "mask_ms",
           "fwd_peak_mib", "fwdbwd_peak_mib", "fwd_tflops", "fwdbwd_tflops", "fwdbwd_mm_pct", "fwd_gbps",
           "fwdbwd_gbps", "fwdbwd_copy_pct", "max_err", "grad_err", "bitwise", "error"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", help="Markdown table path (a .csv with every number is written beside it)")
    p.add_argument("--res", default="512,224", help="input resolutions (224: n_win 7; 512: n_win 8)")
    p.add_argument("--batch", default="64,1")
    p.add_argument("--stages", default="1,2,3")
    p.add_argument("--ops", default=",".join(bp.OPS), help=f"subset of {bp.OPS}")
    p.add_argument("--providers", default=",".join(bp.PROVIDERS), help=f"subset of {bp.PROVIDERS}")
    p.add_argument("--routing", default=",".join(bp.ROUTINGS), help=f"routed ops: subset of {bp.ROUTINGS}")
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


class CudaMemory:
    """Peak bytes the CUDA caching allocator hands out during ``fn`` above what was allocated before it."""

    def peak_above_baseline(self, fn) -> int:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base


def peak_mib(fn, prepare=None, meter=None) -> float | None:
    """Peak memory of ``fn`` above the baseline (MiB); None off CUDA unless a ``meter`` is given.

    ``prepare`` runs BEFORE the baseline is read: it frees what the previous run left alive (the gradients of a
    forward+backward). Freeing them inside ``fn`` instead would put them in the baseline and then release them
    during the run, understating the peak by their size (``tests/kernels/test_bench_kernels.py`` shows both)."""
    if prepare is not None:
        prepare()
    meter = meter or (CudaMemory() if torch.cuda.is_available() else None)
    if meter is None:
        fn()
        return None
    return meter.peak_above_baseline(fn) / 2**20


def ceilings(dtype) -> dict:
    """Measured in the same run as the table: device-to-device copy bandwidth ((read + write) bytes / median
    time, 1 GiB) and the dense matmul rate (8192³ in the benchmark dtype, TF32 off for float32)."""
    if not torch.cuda.is_available():
        return {}
    import triton.testing

    src = torch.empty(2**30, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=25, rep=200, return_mode="median")
    out = {"copy_gbps": 2 * 2**30 / (ms * 1e-3) / 1e9}
    del src, dst
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
    ms = triton.testing.do_bench(lambda: a @ b, warmup=25, rep=200, return_mode="median")
    out["matmul_tflops"] = 2 * n**3 / (ms * 1e-3) / 1e12
    del a, b
    torch.cuda.empty_cache()
    return out


def _grad_err(grads: dict, ref_grads: dict) -> float:
    """Largest over the inputs of max |g − ref| / max |ref| (float32 lean torch reference)."""
    return max(float((grads[n].float() - r).abs().max() / r.abs().max().clamp_min(1e-30))
               for n, r in ref_grads.items())


def measure(case, provider, inputs, ref, args, ceil, meter=None) -> dict:
    """One table row; any failure becomes the row's ``error`` (OOM included), never an exception.

    ``ref``: (out, grads, dout) of the float32 lean torch path. Gradient errors, bit-identical reruns and memory
    are measured at every shape; Flex gets its block mask built outside its timings (``mask_ms``)."""
    row = _row(case, provider)
    names = bp.grad_inputs(case)
    ref_out, ref_grads, dout = ref
    try:
        fn = bp.provider_fn(case, provider, compiled_flex=torch.cuda.is_available() and not args.smoke)
        if provider == "flex":
            row["mask_ms"] = _time_ms(lambda: bp.flex_mask_inputs(case, inputs), args) if case.op != "pixel" else None
            inputs = bp.flex_mask_inputs(case, inputs)
        with torch.no_grad():
            out = fn(inputs)
            row["max_err"] = float((out.float() - ref_out).abs().max())
            row["fwd_ms"] = _time_ms(lambda: fn(inputs), args)
            row["fwd_peak_mib"] = peak_mib(lambda: fn(inputs), meter=meter)
        if args.smoke and not torch.cuda.is_available() and provider == "flex":
            raise NotImplementedError("FlexAttention has no backward on CPU")
        leaves = {n: inputs[n].detach().clone().requires_grad_() for n in names}
        grad_in = dict(inputs, **leaves)

        def free_grads():
            for t in leaves.values():
                t.grad = None

        def fwd_bwd():
            free_grads()
            fn(grad_in).backward(dout)

        fwd_bwd()
        first = {n: t.grad.clone() for n, t in leaves.items()}
        row["grad_err"] = _grad_err(first, ref_grads)
        fwd_bwd()
        row["bitwise"] = "yes" if all(torch.equal(first[n], t.grad) for n, t in leaves.items()) else "no"
        del first
        row["fwdbwd_ms"] = _time_ms(fwd_bwd, args)
        row["fwdbwd_peak_mib"] = peak_mib(fwd_bwd, prepare=free_grads, meter=meter)
    except Exception as e:  # noqa: BLE001 - a failing cell is a result (e.g. OOM, Flex cannot compile)
        row["error"] = "OOM" if isinstance(e, torch.cuda.OutOfMemoryError) else f"{type(e).__name__}: {e}"[:160]
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    _rates(row, case, inputs, ceil)
    return row


def _rates(row: dict, case, inputs: dict, ceil: dict) -> None:
    """TFLOP/s (torch's FLOP convention) and GB/s (bytes that must move), against the measured ceilings."""
    fwd_b, fb_b = bp.io_bytes(case, inputs)
    fwd_f, fb_f = bp.flops(case, inputs)
    if row.get("fwd_ms"):
        row["fwd_gbps"] = fwd_b / (row["fwd_ms"] * 1e-3) / 1e9
        row["fwd_tflops"] = fwd_f / (row["fwd_ms"] * 1e-3) / 1e12
    if row.get("fwdbwd_ms"):
        row["fwdbwd_gbps"] = fb_b / (row["fwdbwd_ms"] * 1e-3) / 1e9
        row["fwdbwd_tflops"] = fb_f / (row["fwdbwd_ms"] * 1e-3) / 1e12
        if ceil.get("copy_gbps"):
            row["fwdbwd_copy_pct"] = 100 * row["fwdbwd_gbps"] / ceil["copy_gbps"]
        if ceil.get("matmul_tflops"):
            row["fwdbwd_mm_pct"] = 100 * row["fwdbwd_tflops"] / ceil["matmul_tflops"]


# -- report --------------------------------------------------------------------------------------------------------


def _fmt(v, digits=3) -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


_TABLE = [("op", "op"), ("res", "res"), ("stage", "stage"), ("batch", "B"), ("shape", "shape"),
          ("provider", "provider"), ("fwd_ms", "fwd ms"), ("fwdbwd_ms", "fwd+bwd ms"), ("mask_ms", "mask ms"),
          ("fwd_peak_mib", "fwd peak MiB"), ("fwdbwd_peak_mib", "fwd+bwd peak MiB"),
          ("fwdbwd_tflops", "fwd+bwd TFLOP/s"), ("fwdbwd_mm_pct", "% matmul"), ("fwdbwd_gbps", "fwd+bwd GB/s"),
          ("fwdbwd_copy_pct", "% copy"), ("max_err", "out err"), ("grad_err", "grad rel err"),
          ("bitwise", "bit-identical rerun")]


def markdown(rows, header: list[str]) -> str:
    lines = header + ["", "| " + " | ".join(t for _, t in _TABLE) + " | note |", "|" + "---|" * (len(_TABLE) + 1)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c, _ in _TABLE) + f" | {r.get('error', '')} |")
    return "\n".join(lines + ["", *targets(rows)])


def targets(rows) -> list[str]:
    """The H100 targets at 512² batch 64, per problem: speed-up and memory ratio vs official, speed vs Flex."""
    out = ["### Targets (512², batch 64): Triton fwd+bwd ≥ 3× faster, ≥ 5× less peak memory than official, "
           "not slower than Flex", "", "| op | stage | routing | × faster than official | × less memory | "
           "Flex / Triton time | verdict |", "|---|---|---|---|---|---|---|"]
    by = {(r["op"], r["res"], r["stage"], r["batch"], r.get("routing"), r["provider"]): r for r in rows}
    for (op, res, stage, batch, routing, prov), tri in sorted(by.items(), key=lambda kv: str(kv[0])):
        if prov != "triton" or res != 512 or batch != 64:
            continue
        key = (op, res, stage, batch, routing)
        off, flex = by.get(key + ("official",), {}), by.get(key + ("flex",), {})
        speed = _ratio(off.get("fwdbwd_ms"), tri.get("fwdbwd_ms"))
        mem = _ratio(off.get("fwdbwd_peak_mib"), tri.get("fwdbwd_peak_mib"))
        vs_flex = _ratio(flex.get("fwdbwd_ms"), tri.get("fwdbwd_ms"))
        ok = [speed is not None and speed >= 3, mem is not None and mem >= 5, vs_flex is None or vs_flex >= 1]
        verdict = "met" if all(ok) else "missed: " + ", ".join(
            n for n, good in zip(("speed", "memory", "vs Flex"), ok) if not good)
        if vs_flex is None:
            verdict += " (Flex not measured)"
        out.append(f"| {op} | {stage} | {routing} | {_fmt(speed)} | {_fmt(mem)} | {_fmt(vs_flex)} | {verdict} |")
    return out


def _ratio(a, b):
    return a / b if a and b else None


def environment(args, ceil) -> list[str]:
    import triton

    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (Triton interpreter)"
    return [f"# Kernel benchmark: {dev}", "",
            f"- date {datetime.datetime.now().isoformat(timespec='seconds')}; torch {torch.__version__}; "
            f"triton {triton.__version__}; dtype {args.dtype}; autotuning "
            f"{'off' if os.environ.get('ATTN_KERNELS_AUTOTUNE') == '0' else 'on'}",
            f"- command: `python3 scripts/bench_kernels.py {' '.join(sys.argv[1:])}`",
            f"- ceilings measured in this run: device-to-device copy {_fmt(ceil.get('copy_gbps'))} GB/s "
            f"(read + write), dense {args.dtype} matmul (8192³) {_fmt(ceil.get('matmul_tflops'))} TFLOP/s",
            "- times: median of do_bench (L2 flushed), fwd under no_grad; peak: max_memory_allocated above the "
            "inputs, previous gradients freed before the baseline; TFLOP/s: torch's convention (2 per MAC, backward "
            "2.5× forward); GB/s: bytes that must move (inputs read once, outputs written once) / time; out err: "
            "max |out − ref|; grad rel err: max over inputs of max|g − ref| / max|ref|, ref = float32 lean torch "
            "path; bit-identical rerun: two fwd+bwd runs give equal gradients; Flex: region-aligned blocks, the "
            "block-mask build timed separately (mask ms)"
            if torch.cuda.is_available() else "- CPU smoke run: one call per cell, a crash test, not a measurement"]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        todo = bp.cases([224], [1], [1], args.ops.split(","), tiny=True, routings=args.routing.split(","))
    else:
        todo = bp.cases(_ints(args.res), _ints(args.batch), _ints(args.stages), args.ops.split(","),
                        routings=args.routing.split(","))
    providers = args.providers.split(",")
    if args.dry_run:
        for c in todo:
            print(f"{c.op:6s} {c.res} stage {c.stage} batch {c.batch:3d}  {c.describe():47s} {providers}")
        return 0
    for knob in ("recompile_limit", "cache_size_limit"):  # one Flex graph per problem; never fall back to eager
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 256)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    ceil = ceilings(dtype)
    header = environment(args, ceil)
    rows, start = [], time.monotonic()
    flex_at = None if args.flex_at == "all" else {tuple(map(int, x.split("x"))) for x in args.flex_at.split(",")}
    # Flex last: each Flex problem costs a 10-30 s compile, so every other cell is measured first and Flex gets
    # what is left of --budget-s.
    passes = [[p for p in providers if p != "flex"], [p for p in providers if p == "flex"]]
    for pass_providers in passes:
        for case in todo:
            want = [p for p in pass_providers if not _skip(rows, case, p, args, flex_at, start)]
            if not want:
                continue
            inputs = bp.make_inputs(case, dtype, device)
            dout = torch.randn(inputs["q"].shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)
            ref_out, ref_grads = bp.reference(case, inputs, dout)
            for prov in want:
                if _skip(rows, case, prov, args, flex_at, start):
                    continue
                rows.append(measure(case, prov, inputs, (ref_out, ref_grads, dout), args, ceil))
                print(" ".join(f"{k}={_fmt(v)}" for k, v in rows[-1].items() if k != "_case"), flush=True)
            del inputs, ref_out, ref_grads, dout
            rows.sort(key=lambda r: (todo.index(_case_of(r)), providers.index(r["provider"])))
            write(rows, header, args.out)  # after every problem: a run cut short still leaves its table
    rows.sort(key=lambda r: (todo.index(_case_of(r)), providers.index(r["provider"])))
    write(rows, header, args.out)
    print(markdown(rows, header))
    return 0


def _row(case, provider) -> dict:
    """The identifying columns of one cell (``_case`` is kept for ordering, not written)."""
    return dict(op=case.op, res=case.res, stage=case.stage, batch=case.batch,
                routing=case.routing if case.op != "pixel" else "–", shape=case.describe(), provider=provider,
                _case=case)


def _case_of(row) -> "bp.Case":
    return row["_case"]


def _skip(rows, case, prov, args, flex_at, start) -> bool:
    """Record a skipped cell (with its reason, also printed) and return True, or return False."""
    skip = None
    if args.budget_s is not None and time.monotonic() - start > args.budget_s:
        skip = f"skipped: --budget-s {args.budget_s:g} reached"
    elif prov == "flex" and flex_at is not None and (case.res, case.batch) not in flex_at:
        skip = f"skipped: --flex-at {args.flex_at}"
    if skip is None:
        return False
    rows.append(dict(_row(case, prov), error=skip))
    print(f"{case.op} {case.res} stage {case.stage} batch {case.batch} {case.routing} {prov}: {skip}", flush=True)
    return True


def write(rows, header, out) -> None:
    if not out:
        return
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(markdown(rows, header) + "\n")
    with open(os.path.splitext(out)[0] + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    sys.exit(main())
