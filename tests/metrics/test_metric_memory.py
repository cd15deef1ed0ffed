"""memory: the CPU method finds the bytes a call must hold (within 10%), training > inference."""
import pytest
import torch
from metric_toys import ToyMLP, make_ctx
from torch import nn

from attnbench.metrics import get_metric
from attnbench.metrics._cpu_memory import cpu_peak_bytes, peak_from_events

measure = get_metric("memory")
F32 = 4


class Expand(nn.Module):
    """(B, H, W, C) -> (B, H, W, D) by a matmul with a fixed (C, D) matrix: the call holds only its output."""

    def __init__(self, c, d):
        super().__init__()
        self.w = nn.Parameter(torch.randn(c, d))

    def forward(self, x):
        return x @ self.w


class Scratch(nn.Module):
    """Allocates an (n, n) scratch matrix inside the call, reduces it to (1, C) and frees it."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def forward(self, x):
        t = torch.ones(self.n, self.n, device=x.device, dtype=x.dtype)
        return x[:, 0, 0] * t.sum()


def test_peak_from_events_running_sum():
    events = [(5, -10), (1, 100), (2, 50), (3, -100), (4, 80)]  # out of order on purpose
    assert peak_from_events(events) == 150  # 100, 150, 50, 130, 120
    assert peak_from_events([(1, -10)]) == 0  # frees of older memory never make a peak


def test_cpu_peak_of_plain_function():
    a, b = torch.randn(256, 128), torch.randn(128, 512)
    kept = []
    assert cpu_peak_bytes(lambda: kept.append(a @ b)) == pytest.approx(256 * 512 * F32, rel=0.10)


def test_output_bytes_within_10_percent():
    B, H, W, C, D = 2, 16, 16, 8, 1024
    row = measure(make_ctx(lambda: Expand(C, D), H=H, W=W, dim=C, batch=B))
    assert row["mem_method"] == "cpu_profiler_alloc_events"
    assert row["mem_peak_bytes"] == pytest.approx(B * H * W * D * F32, rel=0.10)  # 2 MiB


def test_temporary_inside_call_is_seen():
    n = 1024
    row = measure(make_ctx(lambda: Scratch(n), H=2, W=2, dim=4))
    assert row["mem_peak_bytes"] == pytest.approx(n * n * F32, rel=0.10)  # 4 MiB freed before the call ends


def test_mlp_inference_and_training():
    B, H, W, C, hidden = 2, 8, 8, 64, 256
    ctx = dict(H=H, W=W, dim=C, batch=B)
    fwd = measure(make_ctx(lambda: ToyMLP(C, hidden), **ctx))["mem_peak_bytes"]
    # inference peak: fc1's output and GELU's output are alive together
    assert fwd == pytest.approx(2 * B * H * W * hidden * F32, rel=0.10)
    train = measure(make_ctx(lambda: ToyMLP(C, hidden), pass_="forward_backward", **ctx))["mem_peak_bytes"]
    params = C * hidden + hidden + hidden * C + C
    assert train > fwd
    assert train > params * F32  # parameter gradients are allocated during the call


def test_memory_rejects_unknown_settings():
    with pytest.raises(ValueError, match=r"settings.memory.foo: unknown key \(allowed: threads\)"):
        measure(make_ctx(ToyMLP, dim=64, settings={"memory": {"foo": 1}}))


def test_cuda_peak_is_max_allocated_minus_before(monkeypatch):
    # no GPU here: fake the allocator counters and check what is subtracted from what, and when
    from attnbench.metrics import memory

    state = {"allocated": 1000, "peak": 1000, "log": []}
    cuda = memory.torch.cuda
    monkeypatch.setattr(cuda, "synchronize", lambda device=None: state["log"].append("sync"))
    monkeypatch.setattr(cuda, "memory_allocated", lambda device=None: state["allocated"])
    monkeypatch.setattr(cuda, "max_memory_allocated", lambda device=None: state["peak"])

    def reset(device=None):
        state["log"].append("reset")
        state["peak"] = state["allocated"]

    def step():
        state["log"].append("step")
        state["peak"], state["allocated"] = state["allocated"] + 700, state["allocated"] + 200

    monkeypatch.setattr(cuda, "reset_peak_memory_stats", reset)
    assert memory.cuda_peak_bytes(step, torch.device("cuda")) == 700
    assert state["log"] == ["sync", "reset", "step", "sync"]
