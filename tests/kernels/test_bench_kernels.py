"""scripts/bench_kernels.py runs end to end (tiny problems, this device) and its Flex providers compute routed and
pixel-agent attention: the GPU benchmark must not crash on arrival."""
from __future__ import annotations

import csv
import os
import sys

import pytest
import torch
from kernel_refs import DEVICE

from attentions.deformable import pixel_to_agent_attention_torch
from attentions.routing import routed_attention

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench_kernels  # noqa: E402
import bench_kernels_providers as bp  # noqa: E402
import bench_kernels_report  # noqa: E402

pytestmark = pytest.mark.triton


def test_dry_run_lists_every_problem(capsys):
    assert bench_kernels.main(["--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # resolutions × batches × stages × (2 routed ops × 2 routings + the back attention)
    assert len(lines) == 2 * 2 * 3 * (2 * 2 + 1)
    # the order of importance: the H100 targets' DBRA and pixel rows (512², batch 64), BRA there, 224², batch 1
    assert "dbra   512 stage 1 batch  64  P=64 nq=4 nk=256 topk=4 C=64 " in lines[0]
    assert [ln.split()[:5] for ln in lines[3:6]] == [["pixel", "512", "stage", str(s), "batch"] for s in (1, 2, 3)]
    assert "dbra   512 stage 1 batch  64  P=64 nq=4 nk=256 topk=4 C=64 skewed" in lines[6]
    assert lines[9].startswith("bra    512 stage 1 batch  64")
    keys = [(ln.split()[0], int(ln.split()[1]), int(ln.split()[5])) for ln in lines]
    first = {k: i for i, k in reversed(list(enumerate(keys)))}
    assert first[("bra", 512, 64)] < first[("dbra", 224, 64)] < first[("dbra", 512, 1)] < first[("dbra", 224, 1)]


def test_smoke_run_writes_tables(tmp_path):
    out = tmp_path / "bench.md"
    bench_kernels.main(["--smoke", "--ops", "dbra,pixel", "--providers", "official,triton", "--routing", "skewed",
                        "--out", str(out), "--min-samples", "2", "--warmup-ms", "0", "--rep-ms", "0"])
    rows = list(csv.DictReader(open(tmp_path / "bench.csv")))
    assert [(r["op"], r["routing"], r["provider"]) for r in rows] == [  # uniform ("not routed") before skewed
        ("pixel", "–", "official"), ("pixel", "–", "triton"), ("dbra", "skewed", "official"),
        ("dbra", "skewed", "triton")]
    for r in rows:
        assert r["error"] == "" and r["status"] == "measured"
        assert float(r["fwd_ms"]) > 0 and float(r["fwdbwd_ms"]) > 0 and int(r["fwdbwd_n"]) == 2
        assert float(r["max_err"]) < 2e-2  # bf16 forward vs the float32 torch path
        assert float(r["grad_err"]) < 5e-2  # every gradient checked at every shape
        if r["provider"] in bench_kernels_report.DETERMINISTIC:  # only the kernels promise it (grid_sample's CUDA backward does not)
            assert r["bitwise"] == "yes"
        assert float(r["fwdbwd_tflops"]) > 0 and float(r["fwd_gbps"]) > 0
    assert "| dbra | 224 | 1 | 1 | P=4 nq=4 nk=16 topk=2 C=32 skewed | triton |" in out.read_text()


def test_median_has_at_least_min_samples():
    """A call slower than the whole measuring budget (the old rep = 50 ms gave such a cell a median of one sample)
    still gets --min-samples samples; a fast call gets as many as the budget holds."""
    import time

    from bench_kernels_timing import median_ms

    calls = []
    ms, n = median_ms(lambda: (calls.append(1), time.sleep(0.02)), min_samples=10, warmup_ms=0, rep_ms=5)
    calls.clear()
    ms, n = median_ms(lambda: (calls.append(1), time.sleep(0.02)), min_samples=10, warmup_ms=1, rep_ms=5)
    assert n == 10 and len(calls) == 11 and ms >= 20  # one warm-up call, then ten samples
    calls.clear()
    ms, n = median_ms(lambda: (calls.append(1), time.sleep(0.02)), min_samples=10, warmup_ms=0, rep_ms=5)
    assert n == 10 and len(calls) == 10 and ms >= 20  # no warm-up asked for: ten samples
    _, n_fast = median_ms(lambda: None, min_samples=10, warmup_ms=1, rep_ms=5)
    assert n_fast > 10


def test_dimensions_of_the_stage_problems():
    """The DBRA spec §3.3 shapes: 224² n_win 7 (7×7 agents), 512² n_win 8 (16×16 agents)."""
    g = bp.Case("dbra", 224, 1, 1).geometry
    assert (g["H"], g["n_win"], g["Hk"], g["topk"], g["C"]) == (56, 7, 7, 4, 64)
    g = bp.Case("pixel", 512, 3, 1).geometry
    assert (g["H"], g["n_win"], g["Hk"], g["heads"], g["groups"], g["q_size"]) == (32, 8, 16, 8, 4, 14)
    assert bp.Case("bra", 512, 2, 1).describe() == "P=64 nq=64 nk=64 topk=4 C=128"


class _LiveBytesMeter:
    """CPU stand-in for the CUDA allocator's accounting: live bytes = the storages of every tensor the garbage
    collector can reach, and of their ``.grad``; "peak" = live bytes after ``fn`` minus before (a lower bound of
    the true peak, enough to see whether the gradients ``fn`` leaves alive are counted)."""

    @staticmethod
    def live() -> int:
        import gc

        seen, total = set(), 0
        for obj in gc.get_objects():
            if issubclass(type(obj), torch.Tensor):  # type(): no attribute lookups on lazy proxies
                for t in (obj, obj.grad):
                    if t is not None and t.device.type == "cpu" and not t.is_meta:
                        st = t.untyped_storage()
                        if st.data_ptr() not in seen and st.nbytes():
                            seen.add(st.data_ptr())
                            total += st.nbytes()
        return total

    def peak_above_baseline(self, fn) -> int:
        base = self.live()
        fn()
        return self.live() - base


def test_memory_baseline_frees_previous_gradients():
    """The fwd+bwd peak must count the gradients the run creates: freeing the previous run's gradients inside the
    timed function (the old benchmark) puts them in the baseline and reports ~0; freeing them before the baseline
    (``prepare``) reports at least their size."""
    x = torch.randn(512, 1024, requires_grad=True)  # 2 MiB, and 2 MiB of gradient
    grad_mib = x.numel() * 4 / 2**20

    def free():
        x.grad = None

    def fwd_bwd():
        free()
        (x * 2).sum().backward()

    fwd_bwd()  # a previous run (timing) leaves x.grad alive
    old_way = bench_kernels.peak_mib(fwd_bwd, meter=_LiveBytesMeter())
    fixed = bench_kernels.peak_mib(fwd_bwd, prepare=free, meter=_LiveBytesMeter())
    assert old_way < 0.5 * grad_mib  # understated: the new gradient replaced one counted in the baseline
    assert fixed >= grad_mib


def test_benchmark_row_counts_gradients_in_fwdbwd_peak():
    """measure() itself: with the CPU meter, the fwd+bwd peak of a real problem is at least the bytes of the
    q, k, v gradients it leaves alive (the forward's peak is not: it runs without gradients)."""
    case = bp.Case("dbra", 224, 1, 1, tiny=True)
    inputs = bp.make_inputs(case, torch.float32, "cpu")
    dout = torch.randn(inputs["q"].shape)
    ref_out, ref_grads = bp.reference(case, inputs, dout)
    args = bench_kernels.parse_args(["--smoke"])
    row = bench_kernels.measure(case, "torch", inputs, (ref_out, ref_grads, dout), args, {}, meter=_LiveBytesMeter())
    assert row.get("error") is None and row["status"] == "measured", row
    grad_mib = sum(inputs[n].numel() * 4 for n in ("q", "k", "v")) / 2**20
    assert row["fwdbwd_peak_mib"] >= grad_mib
    assert row["grad_err"] < 1e-5 and row["bitwise"] == "yes"  # CPU: the torch path is deterministic too


def test_skewed_routing_is_distinct_and_skewed():
    """Skewed routing: distinct regions in every routed list; the most popular key region is picked by far more
    query regions than under uniform routing, and some key regions by none."""
    g = torch.Generator().manual_seed(0)
    B, P, topk = 4, 49, 4
    for kind in bp.ROUTINGS:
        idx = bp.routing_indices(B, P, topk, kind, g)
        assert idx.shape == (B, P, topk) and all(len(set(r)) == topk for r in idx.view(-1, topk).tolist())
    skew = torch.stack([torch.bincount(i.flatten(), minlength=P) for i in bp.routing_indices(B, P, topk, "skewed", g)])
    flat = torch.stack([torch.bincount(i.flatten(), minlength=P) for i in bp.routing_indices(B, P, topk, "uniform", g)])
    assert skew.amax(1).float().mean() > 2 * flat.amax(1).float().mean()
    assert (skew == 0).sum() > (flat == 0).sum()


def test_region_aligned_flex_blocks():
    """Flex block sizes: 128 for regions of 256 tokens, the region itself for 16/64, 16 below 16 tokens; kernel
    options divide the blocks and satisfy Flex's backward constraints."""
    assert [bp.aligned_block(n) for n in (256, 64, 16, 4, 1, 49)] == [128, 64, 16, 16, 16, 16]
    assert bp.flex_kernel_options(128, 128) is None
    for qb, kb in ((16, 64), (64, 16), (16, 16), (64, 64), (128, 16)):
        o = bp.flex_kernel_options(qb, kb)
        assert qb % o["BLOCK_M"] == 0 and kb % o["BLOCK_N"] == 0
        assert kb % o["BLOCK_N1"] == 0 and qb % o["BLOCK_M1"] == 0 and kb % o["BLOCK_N2"] == 0
        assert qb % o["BLOCK_M2"] == 0 and o["BLOCK_N1"] % o["BLOCK_M1"] == 0 and o["BLOCK_M2"] % o["BLOCK_N2"] == 0


def test_region_aligned_block_mask_is_exactly_the_routing():
    """With blocks = region sizes, every tile is one (query region, key region) pair: the full blocks of each
    query region are exactly its routed regions and nothing is partial, so Flex does exactly the routed work."""
    g = torch.Generator().manual_seed(1)
    B, P, topk, nq, nk = 2, 9, 3, 16, 64
    idx = bp.routing_indices(B, P, topk, "skewed", g)
    mask = bp.routing_block_mask(idx, nq, nk, (nq, nk))
    assert int(mask.kv_num_blocks.sum()) == 0  # no partial tile
    full_num, full_idx = mask.full_kv_num_blocks[:, 0], mask.full_kv_indices[:, 0]
    for b in range(B):
        for p in range(P):
            assert sorted(full_idx[b, p, :full_num[b, p]].tolist()) == sorted(idx[b, p].tolist())


@pytest.mark.filterwarnings("ignore:.*without torch.compile")  # eager Flex on CPU is the slow math path
@pytest.mark.parametrize("nq, nk, P, topk", [(16, 16, 4, 2), (1, 8, 9, 3), (3, 6, 9, 9)])
def test_flex_routed_matches_torch(nq, nk, P, topk):
    """The Flex provider (block mask from the routing) equals the torch path; backward only on CUDA."""
    if DEVICE == "cuda" and (nq, nk, P, topk) != (1, 8, 9, 3):
        pytest.skip("one shape on CUDA: each compiles Flex forward and backward (~10-30 s)")
    g = torch.Generator().manual_seed(P + nq)
    q, k, v = (torch.randn(2, P, n, 32, generator=g).to(DEVICE) for n in (nq, nk, nk))
    idx = torch.rand(2, P, P, generator=g).topk(topk, -1).indices.to(DEVICE)
    flex = bp._flex(compiled=DEVICE == "cuda")
    leaves = [t.requires_grad_(DEVICE == "cuda") for t in (q, k, v)]
    got = bp.flex_routed_attention(*leaves, idx, 2, 0.3, flex=flex)
    want = routed_attention(*leaves, idx, 2, 0.3, impl="torch")
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    if DEVICE == "cuda":
        for a, b in zip(torch.autograd.grad(got.sum(), leaves), torch.autograd.grad(want.sum(), leaves)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


@pytest.mark.filterwarnings("ignore:.*without torch.compile")
def test_flex_pixel_agent_matches_torch():
    """The Flex provider's score_mod bias equals the grid_sample bias; on CUDA also every gradient (table and
    positions are captured tensors of the score_mod)."""
    g = torch.Generator().manual_seed(0)
    B, m, G, H, W, Ns, d, T = 2, 2, 2, 5, 6, 9, 16, 7
    q = torch.randn(B * m, H * W, d, generator=g)
    k, v = torch.randn(B * m, Ns, d, generator=g), torch.randn(B * m, Ns, d, generator=g)
    pos, table = torch.rand(B * G, Ns, 2, generator=g) * 3 - 1.5, torch.randn(m, T, T, generator=g)
    args = [t.to(DEVICE).requires_grad_(DEVICE == "cuda") for t in (q, k, v, pos, table)]
    got = bp.flex_pixel_agent(*args, G, H, W, 0.3, flex=bp._flex(compiled=DEVICE == "cuda"))
    want = pixel_to_agent_attention_torch(*args, G, H, W, 0.3)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    if DEVICE == "cuda":
        got_g = torch.autograd.grad(got.square().sum(), args, allow_unused=True)
        for name, a, b in zip(("q", "k", "v", "pos", "table"), got_g, torch.autograd.grad(want.square().sum(), args)):
            assert a is not None, f"Flex returned no gradient for {name}"
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0, msg=lambda m: f"{name}: {m}")


def _target_rows(flex_ms=None, official_ms=40.0):
    base = dict(op="dbra", res=512, stage=1, batch=64, routing="uniform")
    rows = [dict(base, provider="triton", status="measured", fwdbwd_ms=10.0, fwdbwd_peak_mib=100.0)]
    if official_ms:
        rows.append(dict(base, provider="official", status="measured", fwdbwd_ms=official_ms, fwdbwd_peak_mib=900.0))
    rows.append(dict(base, provider="flex", **(dict(status="measured", fwdbwd_ms=flex_ms) if flex_ms else
                                              dict(status="not measured: killed"))))
    return rows


def test_target_not_measured_is_never_met():
    """A target whose Flex or official row has no number is "not measured" (named), never "met"; "met" needs
    every target measured and met; a measured miss is named as missed."""
    verdict = lambda rows: bench_kernels_report.targets(rows)[-1].rsplit("|", 2)[1].strip()  # noqa: E731
    assert verdict(_target_rows(flex_ms=12.0)) == "met"
    assert verdict(_target_rows()) == "not measured: vs Flex"
    assert verdict(_target_rows(flex_ms=12.0, official_ms=None)) == "not measured: speed, memory"
    assert verdict(_target_rows(flex_ms=5.0, official_ms=20.0)) == "missed: speed, vs Flex"
    assert verdict(_target_rows(official_ms=20.0)) == "missed: speed; not measured: vs Flex"


def test_merge_joins_tables_and_targets(tmp_path):
    """--merge: rows of several .csv files (numbers read back as numbers) in one table, targets over all of them
    (Flex's row from another run counts), a missing file named, and the measured / not measured count."""
    a, b = _target_rows()[:2], [dict(_target_rows(flex_ms=12.0)[2], shape="x")]
    bench_kernels_report.write(a, ["# a"], str(tmp_path / "a.md"))
    bench_kernels_report.write(b, ["# b"], str(tmp_path / "b.md"))
    paths = [str(tmp_path / n) for n in ("a.csv", "b.csv", "missing.csv")]
    assert bench_kernels_report.main(["--merge", *paths, "--out", str(tmp_path / "all.md")]) == 0
    text = (tmp_path / "all.md").read_text()
    assert "- cells: 3 measured, 0 not measured" in text and "missing.csv: missing" in text
    assert text.rstrip().endswith("| dbra | 1 | uniform | 4 | 9 | 1.2 | met |")


@pytest.mark.slow  # a benchmark process killed by a real signal mid-cell: ~4-5 s; .ci/run runs it
@pytest.mark.skipif(DEVICE != "cpu", reason="catching a cell mid-run needs the interpreter's slow cells")
def test_killed_run_leaves_every_cell_marked(tmp_path):
    """The GPU check's stage timeout kills the benchmark process mid-cell: the table on disk (rewritten before and
    after every cell) then marks the cells before as measured, the one running as killed and the rest as not
    reached, so no row is blank and none is counted as met."""
    import signal
    import subprocess
    import time

    out = tmp_path / "t.md"
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "bench_kernels.py"), "--tiny", "--res", "224", "--batch",
           "1", "--stages", "1", "--ops", "dbra", "--routing", "uniform,skewed", "--providers", "torch,triton",
           "--min-samples", "1", "--warmup-ms", "0", "--rep-ms", "0", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=ROOT, TRITON_INTERPRET="1"))
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            csv_path = tmp_path / "t.csv"
            text = csv_path.read_text() if csv_path.exists() else ""
            if "killed (the run was stopped" in text and ",measured," in text:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before a second cell started"
        proc.send_signal(signal.SIGTERM)  # what `timeout` sends
        proc.wait(timeout=60)
    finally:
        proc.kill()
    status = [r["status"] for r in csv.DictReader(open(tmp_path / "t.csv"))]
    running = [i for i, s in enumerate(status) if s.startswith("not measured: killed (the run was stopped")]
    assert len(running) == 1 and len(status) == 4, status
    assert all(s == "measured" for s in status[:running[0]]) and running[0] >= 1
    assert all(s == "not measured: not reached (the run ended first)" for s in status[running[0] + 1:])
