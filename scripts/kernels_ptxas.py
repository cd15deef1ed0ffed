#!/usr/bin/env python
"""Compile the Triton kernels for a CUDA target without a GPU and report registers, spills and shared memory.

Triton compiles ahead of time for any target (``triton.compile`` with a ``GPUTarget``), and its bundled ``ptxas``
reports each kernel's resources. This checks that the kernels compile for the GPU (the interpreter tests do not)
and shows register pressure for every autotune configuration the pruning keeps at the benchmark's problem shapes
(and the heuristic tiles): the configurations in attentions/kernels were chosen from this report.

    python scripts/kernels_ptxas.py                 # sm_90 (H100/H200), bfloat16
    python scripts/kernels_ptxas.py --arch 80 --dtype fp32
    python scripts/kernels_ptxas.py --only pixel    # one kernel family
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)  # compile the real kernels, whatever the caller's environment says
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from attentions.kernels import pixel_agent_attention as pa  # noqa: E402
from attentions.kernels import routed_attention as ra  # noqa: E402

PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
_ROUTED = [(1, 64, 4, 2), (1, 16, 8, 4), (1, 4, 16, 8), (4, 256, 4, 2), (4, 64, 8, 4), (4, 16, 16, 8),
           (64, 64, 1, 2), (16, 16, 4, 4), (4, 4, 16, 8), (256, 256, 1, 2), (64, 64, 4, 4), (16, 16, 16, 8)]
_PIXEL = [(49, 56 * 56, 2, 1, 111), (49, 14 * 14, 8, 4, 27), (256, 128 * 128, 2, 1, 111), (256, 32 * 32, 8, 4, 27),
          (441, 128 * 128, 2, 1, 111), (1024, 256 * 256, 2, 1, 111),  # (Ns, H·W, heads, groups, table)
          (9, 8 * 8, 2, 1, 27), (25, 16 * 16, 2, 1, 27), (100, 32 * 32, 2, 1, 27)]  # BLOCK_S 16, 32, 128


def _tuned(prune, table, shape: dict, heuristic) -> list:
    """((BLOCK_M, BLOCK_N), warps) of the configs ``prune`` keeps for ``shape``, plus the heuristic tiles."""
    kept = [((c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]), c.num_warps) for c in prune(ra._configs(table), shape)]
    return kept + ([(tuple(heuristic), 4)] if (tuple(heuristic), 4) not in kept else [])


def compile_report(fn, meta: dict, ptr: dict, floats: tuple, arch: int) -> str:
    consts = {k: v for k, v in meta.items() if k != "num_warps"}
    sig = {n: "constexpr" if n in consts else ptr.get(n, "fp32" if n in floats else "i32") for n in fn.arg_names}
    k = triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", arch, 32),
                       options=dict(num_warps=meta["num_warps"]))
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(k.asm["ptx"])
    log = subprocess.run([PTXAS, f"-arch=sm_{arch}a" if arch >= 90 else f"-arch=sm_{arch}", "-v", f.name,
                          "-o", os.devnull], capture_output=True, text=True).stderr
    os.unlink(f.name)
    regs = re.findall(r"Used (\d+) registers", log)
    spill = re.findall(r"(\d+) bytes spill stores", log)
    regs, spill = (regs[0] if regs else "?"), (spill[0] if spill else "?")
    return f"regs {regs:>3}  spill {spill:>5} B  shared {k.metadata.shared:>6} B"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--only", choices=["routed", "pixel"], help="compile one kernel family only")
    args = p.parse_args(argv)
    prec = "ieee" if args.dtype == "fp32" else "tf32"
    io = {n: f"*{args.dtype}" for n in ("Q", "K", "V", "OUT", "DOUT", "DQ", "TABLE", "DK", "DV")}
    io.update(IDX="*i64", LSE2="*fp32", DELTA="*fp32", INV="*i32", OFFS="*i32", POS="*fp32", DPOS="*fp32",
              DTABLE="*i64", FX_SCALE="*fp32")
    pixel_io = dict(io, DK="*fp32", DV="*fp32")  # per-chunk float32 partial sums
    # every autotune config the pruning keeps at each shape (the GPU check's timed stages tune over exactly these),
    # and the heuristic tiles (the interpreter's and ATTN_KERNELS_AUTOTUNE=0's)
    for nq, nk, topk, heads in _ROUTED if args.only != "pixel" else []:
        shape = dict(NQ=nq, NK=nk, TOPK=topk)
        base = dict(NQ=nq, NK=nk, TOPK=topk, NUM_HEADS=heads, HEAD_DIM=32, BLOCK_D=32, DOT_PRECISION=prec,
                    UPCAST=False)
        q_tiles = _tuned(ra._prune(lambda a: a["NQ"], lambda a: a["TOPK"] * a["NK"]), ra._Q_CONFIGS, shape,
                         ra._tiles(nq, nk, topk, 32)[:2])
        kv_tiles = _tuned(ra._prune(lambda a: a["NQ"] * a["TOPK"], lambda a: a["NK"]), ra._KV_CONFIGS, shape,
                          ra._kv_tiles(nq, nk, topk))
        for fn, tiles in ((ra._routed_attn_fwd, q_tiles), (ra._routed_attn_bwd_dq, q_tiles),
                          (ra._routed_attn_bwd_dkdv, kv_tiles)):
            for (m_, n_), warps in tiles:
                meta = dict(base, BLOCK_M=m_, BLOCK_N=n_, num_warps=warps)
                rep = compile_report(fn, meta, io, ("qk_scale", "sm_scale"), args.arch)
                print(f"{fn.fn.__name__:21s} nq={nq:<3d} nk={nk:<3d} topk={topk:<2d} tiles {m_}x{n_}x32 "
                      f"warps {warps}  {rep}", flush=True)
    for ns, hw, heads, groups, table in _PIXEL if args.only != "routed" else []:
        bs = pa._block_s(ns)
        for backward, fn in ((False, pa._pixel_agent_fwd), (True, pa._pixel_agent_bwd)):
            configs = pa._BWD_CONFIGS if backward else pa._FWD_CONFIGS
            kept = pa._prune(configs)(pa._configs(configs), dict(BLOCK_S=bs, HW=hw))
            pairs = [(c.kwargs["BLOCK_M"], c.num_warps) for c in kept]
            heuristic = (pa._BWD_TILES if backward else pa._FWD_TILES)[bs]
            for bm, warps in pairs + ([heuristic] if heuristic not in pairs else []):
                meta = dict(NS=ns, HEAD_DIM=32, NUM_HEADS=heads, N_GROUPS=groups, TH=table, TW=table, BLOCK_M=bm,
                            BLOCK_S=bs, BLOCK_D=32, DOT_PRECISION=prec, UPCAST=False, num_warps=warps)
                rep = compile_report(fn, meta, pixel_io, ("den_h", "den_w", "sm_scale"), args.arch)
                print(f"{fn.fn.__name__:21s} Ns={ns:<4d} m={heads} G={groups} tiles {bm}x{bs} warps {warps}  {rep}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
