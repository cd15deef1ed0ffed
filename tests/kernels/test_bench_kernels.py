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

pytestmark = pytest.mark.triton


def test_dry_run_lists_every_problem(capsys):
    assert bench_kernels.main(["--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 * 2 * 3 * 3  # resolutions × batches × ops × stages
    assert "dbra   512 stage 1 batch  64  P=64 nq=4 nk=256 topk=4 C=64" in lines[3]


def test_smoke_run_writes_tables(tmp_path):
    out = tmp_path / "bench.md"
    bench_kernels.main(["--smoke", "--ops", "dbra,pixel", "--providers", "official,triton", "--out", str(out)])
    rows = list(csv.DictReader(open(tmp_path / "bench.csv")))
    assert [(r["op"], r["provider"]) for r in rows] == [
        ("dbra", "official"), ("dbra", "triton"), ("pixel", "official"), ("pixel", "triton")]
    for r in rows:
        assert r["error"] == "" and float(r["fwd_ms"]) > 0 and float(r["fwdbwd_ms"]) > 0
        assert float(r["max_err"]) < 2e-2  # bf16 forward vs the float32 torch path
    assert "| dbra | 224 | 1 | 1 | P=4 nq=4 nk=16 topk=2 C=32 | triton |" in out.read_text()


def test_dimensions_of_the_stage_problems():
    """The DBRA spec §3.3 shapes: 224² n_win 7 (7×7 agents), 512² n_win 8 (16×16 agents)."""
    g = bp.Case("dbra", 224, 1, 1).geometry
    assert (g["H"], g["n_win"], g["Hk"], g["topk"], g["C"]) == (56, 7, 7, 4, 64)
    g = bp.Case("pixel", 512, 3, 1).geometry
    assert (g["H"], g["n_win"], g["Hk"], g["heads"], g["groups"], g["q_size"]) == (32, 8, 16, 8, 4, 14)
    assert bp.Case("bra", 512, 2, 1).describe() == "P=64 nq=64 nk=64 topk=4 C=128"


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
