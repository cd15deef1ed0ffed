#!/usr/bin/env python3
"""Benchmark the DBRA/BRA hot-path kernels against the official-style torch path, the lean torch path and
FlexAttention, at DeBiFormer-S stage shapes (224² and 512², batch 1 and 64, uniform and skewed routing).

Per (problem, provider): forward and forward+backward time (median of ≥ ``--min-samples`` samples, L2 cleared
before each; for calls under ``--graph-below-ms`` also the time replayed from a CUDA graph, without launch
overhead), Flex's block-mask build time on its own, peak memory above the inputs (previous gradients freed before the baseline),
TFLOP/s and GB/s against a dense matmul and a device copy measured in the same run, the output's and every
gradient's error against the float32 lean torch path, and whether two fwd+bwd runs give bit-identical gradients
(required only of providers that promise it). Every planned cell is a row from the start, marked "measured" or
"not measured: <why>" (not reached, skipped, killed, failed). Prints Markdown tables and a check of the H100
targets (512² batch 64: Triton fwd+bwd ≥ 3× faster and ≥ 5× less peak memory than official, not slower than Flex;
a target whose rows were not measured is "not measured", never "met"), writes them to ``--out`` after every cell
and every number to ``--out`` with ``.csv``. ``--merge`` joins the .csv files of several runs into one table.

    PYTHONPATH=$PWD python3 scripts/bench_kernels.py --out reports/kernels/bench-h100.md
    python3 scripts/bench_kernels.py --dry-run          # list the problems and providers, no tensors
    python3 scripts/bench_kernels.py --smoke --out x.md  # tiny shapes on CPU (Triton interpreter): a crash test
    python3 scripts/bench_kernels.py --merge a.csv b.csv --out all.md   # one table and targets from several runs
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import torch

if not torch.cuda.is_available():  # before attentions.kernels is imported (see tests/conftest.py)
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_kernels_providers as bp  # noqa: E402
from bench_kernels_report import DETERMINISTIC, _fmt, markdown, merge, targets, write  # noqa: E402
from bench_kernels_timing import CellTimeout, cell_time_limit, graph_ms, median_ms  # noqa: E402

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
    p.add_argument("--warmup-ms", type=float, default=10.0, help="warm-up before each timing (ms; ≥ 1 call)")
    p.add_argument("--rep-ms", type=float, default=50.0, help="measuring budget per timing (ms), but see --min-samples")
    p.add_argument("--min-samples", type=int, default=10, help="samples per median, however slow the call")
    p.add_argument("--graph-below-ms", type=float, default=1.0, help="CUDA: also time calls faster than this "
                   "replayed from a CUDA graph (no launch overhead); 0: never")
    p.add_argument("--budget-s", type=float, default=None, help="stop starting cells after this many seconds; the "
                   "remaining cells are marked not measured")
    p.add_argument("--cell-timeout-s", type=float, default=None, help="abandon a cell (its compile or timing) after "
                   "this many seconds and mark it not measured")
    p.add_argument("--flex-at", default="all", help="measure Flex only at these RESxBATCH (e.g. 512x64): each "
                   "problem costs a Flex compile of ~10-30 s")
    p.add_argument("--ceilings", help="JSON file of the copy/matmul ceilings: read if it exists, else measured and "
                   "written (one measurement for several runs)")
    p.add_argument("--merge", nargs="+", metavar="CSV", help="join these .csv tables into --out, no measuring")
    p.add_argument("--plan-only", action="store_true", help="write --out with every cell not measured (its stage "
                   "has not started) and stop: the GPU check writes every table before measuring anything")
    p.add_argument("--dry-run", action="store_true", help="list problems and providers only")
    p.add_argument("--smoke", action="store_true", help="tiny problems on whatever device there is (224², batch 1, "
                   "stage 1)")
    p.add_argument("--tiny", action="store_true", help="every selected problem at a tiny CPU-sized stand-in shape, "
                   "labels kept (the GPU check's CPU rehearsal)")
    return p.parse_args(argv)


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


# -- measurement ---------------------------------------------------------------------------------------------------


def _time_ms(fn, args) -> tuple[float, int]:
    """(median ms, samples) of ``fn``; see bench_kernels_timing.median_ms."""
    return median_ms(fn, args.min_samples, args.warmup_ms, args.rep_ms)


def _graph_ms(fn, plain_ms, args):
    """Graph-replayed ms for a call under --graph-below-ms on CUDA, else None; a failed capture is a note."""
    if not torch.cuda.is_available() or not plain_ms or plain_ms >= args.graph_below_ms:
        return None
    try:
        return graph_ms(fn, samples=args.min_samples)
    except Exception as e:  # noqa: BLE001 - a provider that cannot be captured keeps its plain time
        return f"graph failed: {type(e).__name__}"


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
    if meter is None:  # nothing to read the peak from (CPU): not worth a call
        return None
    return meter.peak_above_baseline(fn) / 2**20


def ceilings(dtype, path=None) -> dict:
    """Measured in the same run as the table (or read from ``path``, written by an earlier run of the same
    check): device-to-device copy bandwidth ((read + write) bytes / median time, 1 GiB) and the dense matmul rate
    (8192³ in the benchmark dtype, TF32 off for float32)."""
    if not torch.cuda.is_available():
        return {}
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    ms, _ = median_ms(lambda: dst.copy_(src), 10, 25, 200)
    out = {"copy_gbps": 2 * 2**30 / (ms * 1e-3) / 1e9}
    del src, dst
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
    ms, _ = median_ms(lambda: a @ b, 10, 25, 200)
    out["matmul_tflops"] = 2 * n**3 / (ms * 1e-3) / 1e12
    del a, b
    torch.cuda.empty_cache()
    if path:
        with open(path, "w") as f:
            json.dump(out, f)
    return out


def _grad_err(grads: dict, ref_grads: dict) -> float:
    """Largest over the inputs of max |g − ref| / max |ref| (float32 lean torch reference)."""
    return max(float((grads[n].float() - r).abs().max() / r.abs().max().clamp_min(1e-30))
               for n, r in ref_grads.items())


def measure(case, provider, inputs, ref, args, ceil, meter=None) -> dict:
    """One table row; any failure becomes the row's ``error`` (OOM and --cell-timeout-s included), never an
    exception, and the row's ``status`` says whether both times were measured.

    ``ref``: (out, grads, dout) of the float32 lean torch path. Gradient errors, bit-identical reruns and memory
    are measured at every shape; Flex gets its block mask built outside its timings (``mask_ms``)."""
    row = _row(case, provider)
    names = bp.grad_inputs(case)
    ref_out, ref_grads, dout = ref
    try:
        with cell_time_limit(args.cell_timeout_s):
            _measure_into(row, case, provider, inputs, names, ref_out, ref_grads, dout, args, meter)
    except CellTimeout as e:
        row["error"] = row["killed"] = str(e)
    except Exception as e:  # noqa: BLE001 - a failing cell is a result (e.g. OOM, Flex cannot compile)
        row["error"] = "OOM" if isinstance(e, torch.cuda.OutOfMemoryError) else f"{type(e).__name__}: {e}"[:160]
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    _rates(row, case, inputs, ceil)
    killed = row.pop("killed", None)
    if row.get("fwd_ms") and row.get("fwdbwd_ms"):
        row["status"] = "measured"
    else:
        row["status"] = "not measured: " + ("fwd+bwd " if row.get("fwd_ms") else "") + (killed or "failed, see note")
    return row


def _measure_into(row, case, provider, inputs, names, ref_out, ref_grads, dout, args, meter) -> None:
    fn = bp.provider_fn(case, provider, compiled_flex=torch.cuda.is_available() and not (args.smoke or args.tiny))
    if provider == "flex":
        row["mask_ms"] = _time_ms(lambda: bp.flex_mask_inputs(case, inputs), args)[0] if case.op != "pixel" else None
        inputs = bp.flex_mask_inputs(case, inputs)
    with torch.no_grad():
        out = fn(inputs)
        row["max_err"] = float((out.float() - ref_out).abs().max())
        row["fwd_ms"], row["fwd_n"] = _time_ms(lambda: fn(inputs), args)
        row["fwd_graph_ms"] = _graph_ms(lambda: fn(inputs), row["fwd_ms"], args)
        row["fwd_peak_mib"] = peak_mib(lambda: fn(inputs), meter=meter)
    if not torch.cuda.is_available() and provider == "flex":
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
    row["fwdbwd_ms"], row["fwdbwd_n"] = _time_ms(fwd_bwd, args)
    row["fwdbwd_graph_ms"] = _graph_ms(fwd_bwd, row["fwdbwd_ms"], args)
    row["fwdbwd_peak_mib"] = peak_mib(fwd_bwd, prepare=free_grads, meter=meter)


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
            f"- times: median of ≥ {args.min_samples} samples (L2 cleared before each; 'samples' gives the fwd+bwd "
            f"count), fwd under no_grad; graph ms: calls under {args.graph_below_ms:g} ms replayed from a CUDA graph "
            "(no launch overhead, L2 not cleared); peak: max_memory_allocated above the "
            "inputs, previous gradients freed before the baseline; TFLOP/s: torch's convention (2 per MAC, backward "
            "2.5× forward); GB/s: bytes that must move (inputs read once, outputs written once) / time; out err: "
            "max |out − ref|; grad rel err: max over inputs of max|g − ref| / max|ref|, ref = float32 lean torch "
            "path; bit-identical rerun: two fwd+bwd runs give equal gradients (promised by "
            f"{', '.join(DETERMINISTIC)} only: grid_sample's and index_add's CUDA backward add floats "
            "atomically); Flex: region-aligned blocks, the block-mask build timed separately (mask ms)"
            if torch.cuda.is_available() else "- CPU run (Triton interpreter): times are those of a crash test, not "
            "measurements"]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    if args.smoke:
        todo = bp.cases([224], [1], [1], args.ops.split(","), tiny=True, routings=args.routing.split(","))
    else:
        todo = bp.cases(_ints(args.res), _ints(args.batch), _ints(args.stages), args.ops.split(","),
                        tiny=args.tiny, routings=args.routing.split(","))
    providers = args.providers.split(",")
    if args.dry_run:
        for c in todo:
            print(f"{c.op:6s} {c.res} stage {c.stage} batch {c.batch:3d}  {c.describe():47s} {providers}")
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    ceil = {} if args.plan_only else ceilings(dtype, args.ceilings)
    header = environment(args, ceil)
    start = time.monotonic()
    flex_at = None if args.flex_at == "all" else {tuple(map(int, x.split("x"))) for x in args.flex_at.split(",")}
    # every planned cell is a row from the start: a run cut short (the GPU check's stage timeout kills the
    # process) leaves each cell marked measured or not measured, the one it was in as killed
    why = "its stage did not start (no time left)" if args.plan_only else "not reached (the run ended first)"
    rows = {(case, prov): dict(_row(case, prov), status=f"not measured: {why}") for case in todo for prov in providers}

    def table():
        return [rows[(case, prov)] for case in todo for prov in providers]

    write(table(), header, args.out)
    if args.plan_only:
        return 0
    for knob in ("recompile_limit", "cache_size_limit"):  # one Flex graph per problem; never fall back to eager
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 256)
    # Flex last: each Flex problem costs a 10-30 s compile, so every other cell is measured first and Flex gets
    # what is left of the time.
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
                rows[(case, prov)].update(status="not measured: killed (the run was stopped during this cell)")
                write(table(), header, args.out)
                rows[(case, prov)] = measure(case, prov, inputs, (ref_out, ref_grads, dout), args, ceil)
                print(" ".join(f"{k}={_fmt(v)}" for k, v in rows[(case, prov)].items() if k != "_case"), flush=True)
                write(table(), header, args.out)  # after every cell
            del inputs, ref_out, ref_grads, dout
    write(table(), header, args.out)
    print(markdown(table(), header) if not args.out else "\n".join(targets(table())))  # the table is in --out
    return 0


def _row(case, provider) -> dict:
    """The identifying columns of one cell (``_case`` is kept for ordering, not written)."""
    return dict(op=case.op, res=case.res, stage=case.stage, batch=case.batch,
                routing=case.routing if case.op != "pixel" else "–", shape=case.describe(), provider=provider,
                _case=case)


def _skip(rows, case, prov, args, flex_at, start) -> bool:
    """Mark a skipped cell not measured (with its reason, also printed) and return True, or return False."""
    skip = None
    if args.budget_s is not None and time.monotonic() - start > args.budget_s:
        skip = f"skipped: --budget-s {args.budget_s:g} reached"
    elif prov == "flex" and flex_at is not None and (case.res, case.batch) not in flex_at:
        skip = f"skipped: --flex-at {args.flex_at}"
    if skip is None:
        return False
    rows[(case, prov)].update(status=f"not measured: {skip}")
    print(f"{case.op} {case.res} stage {case.stage} batch {case.batch} {case.routing} {prov}: {skip}", flush=True)
    return True


if __name__ == "__main__":
    sys.exit(main())
