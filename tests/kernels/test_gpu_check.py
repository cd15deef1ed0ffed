"""The CPU rehearsal of scripts/gpu_check.sh (``GPU_CHECK_REHEARSAL=1``): the whole script end to end under the
Triton interpreter, tiny shapes, a fake card, its own short budgets. Slow (about 4.5 minutes): run with
``python3 -m pytest -m slow tests/kernels/test_gpu_check.py``."""
from __future__ import annotations

import csv
import os
import shlex
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench_kernels_report  # noqa: E402

TAG = "rehearsal-cpu-triton-interpreter"
STAGES = {  # the benchmark stages of gpu_check.sh and their arguments (kept in step with the script by the test)
    "512-b64-dbra-pixel": "--res 512 --batch 64 --ops dbra,pixel --routing uniform --providers official,triton,flex",
    "512-b64-bra": "--res 512 --batch 64 --ops bra --routing uniform --providers official,triton,flex",
    "224-b64": "--res 224 --batch 64 --routing uniform --providers official,triton,flex",
    "b1": "--res 512,224 --batch 1 --routing uniform --providers official,torch,triton",
    "512-b64-skewed": "--res 512 --batch 64 --ops bra,dbra --routing skewed --providers official,triton",
}


def _planned(args: str) -> list[tuple]:
    """(op, res, stage, batch, routing, provider) of every cell a stage plans, from the benchmark's own dry run."""
    import bench_kernels_providers as bp

    a = shlex.split(args)
    get = lambda name: a[a.index(name) + 1].split(",")  # noqa: E731
    ops = get("--ops") if "--ops" in a else list(bp.OPS)
    todo = bp.cases([int(x) for x in get("--res")], [int(x) for x in get("--batch")], [1, 2, 3], ops, tiny=True,
                    routings=get("--routing"))
    return [(c.op, c.res, c.stage, c.batch, c.routing if c.op != "pixel" else "–", p)
            for c in todo for p in get("--providers")]


@pytest.mark.slow
def test_rehearsal_writes_every_file_and_marks_every_row(tmp_path):
    script = open(os.path.join(ROOT, "scripts", "gpu_check.sh")).read()
    for name, args in STAGES.items():
        assert name in script and f'"{args}"' in script, f"STAGES is out of step with gpu_check.sh: {name}"
    out = tmp_path / "out"
    t0 = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_check.sh"), str(out)], capture_output=True,
                         text=True, timeout=330, env=dict(env, GPU_CHECK_REHEARSAL="1", OMP_NUM_THREADS="1"))
    wall = time.monotonic() - t0
    log = res.stdout + res.stderr
    assert wall < 300, f"the rehearsal took {wall:.0f} s (limit 5 minutes)"
    assert res.returncode in (0, 1), log[-3000:]  # 1: a stage was cut short or skipped (the summary says which)
    assert "== summary (" in log and "rehearsal CPU (Triton interpreter)" in log
    check_outputs(out)


def check_outputs(out) -> None:
    """Every file, every planned cell a row marked measured / not measured, the verdicts naming what was not
    measured (also usable on a kept output folder)."""
    env_txt = (out / f"env-{TAG}.txt").read_text()
    assert "card: rehearsal CPU (Triton interpreter)" in env_txt and "torch" in env_txt
    assert (out / f"kernel-tests-{TAG}.log").exists()
    all_rows = []
    for name, args in STAGES.items():
        stem = out / f"bench-{name}-{TAG}"
        assert (stem.with_suffix(".md")).exists() and (stem.with_suffix(".log")).exists(), name
        rows = bench_kernels_report.read_rows(str(stem.with_suffix(".csv")))
        cells = [(r["op"], r["res"], r["stage"], r["batch"], r["routing"], r["provider"]) for r in rows]
        assert cells == _planned(args), f"{name}: not every planned cell has a row"
        all_rows += rows
    for r in all_rows:  # every row is measured, or says why not
        assert r["status"] == "measured" or r["status"].startswith("not measured: "), r
        if r["status"] == "measured":
            assert r["fwd_ms"] > 0 and r["fwdbwd_ms"] > 0 and "grad_err" in r
    assert any(r["status"] == "measured" for r in all_rows)
    assert all(r["status"].startswith("not measured") for r in all_rows if r["provider"] == "flex")  # no CPU bwd

    joined = (out / f"bench-all-{TAG}.md").read_text()
    measured = sum(r["status"] == "measured" for r in all_rows)
    assert f"- cells: {measured} measured, {len(all_rows) - measured} not measured" in joined
    assert len(bench_kernels_report.read_rows(str(out / f"bench-all-{TAG}.csv"))) == len(all_rows)
    # the verdict lines: one per 512² batch-64 triton problem, each naming the targets it could not measure
    by = {(r["op"], r["stage"], r["routing"], r["provider"]): r for r in all_rows if r["res"] == 512 and r["batch"] == 64}
    verdicts = joined.split("### Targets")[1].strip().splitlines()[4:]  # past the heading, table header and rule
    assert len(verdicts) == sum(p == "triton" for (*_, p) in by)
    for line in verdicts:
        op, stage, routing, *_, verdict = [c.strip() for c in line.strip("|").split("|")]
        assert verdict != "met"  # Flex cannot be measured on the CPU
        ok = lambda prov, col: by.get((op, int(stage), routing, prov), {}).get(col) is not None  # noqa: E731
        unmeasured = [n for n, prov, col, _ in bench_kernels_report._TARGETS
                      if not (ok(prov, col) and ok("triton", col))]
        assert unmeasured and verdict.endswith("not measured: " + ", ".join(unmeasured)), line
