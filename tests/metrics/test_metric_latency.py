"""latency: statistics against numpy, stopping rule and call counts (never speeds), compile bookkeeping."""
import numpy as np
import pytest
import torch
from metric_toys import ToyLinear, make_ctx
from torch import nn

from attnbench.metrics import _passes, get_metric
from attnbench.metrics._passes import CompileError
from attnbench.metrics.latency import quantile, summarize

measure = get_metric("latency")
FAST = {"min_time_s": 0.0, "min_repeats": 4, "max_repeats": 4, "warmup": 2}

COLUMNS = {
    "latency_ms_median", "latency_ms_q1", "latency_ms_q3", "latency_ms_iqr", "latency_n", "latency_samples_ms",
    "latency_noisy", "latency_timer", "compile_time_s", "threads",
}


class Counting(nn.Module):
    """Counts its forward calls and records whether each call started with the gradients reset."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.calls = 0
        self.grad_was_none = []

    def forward(self, x):
        self.calls += 1
        self.grad_was_none.append(self.fc.weight.grad is None and (not x.requires_grad or x.grad is None))
        return self.fc(x)


@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 2.0, 3.0], [0.5, 9.0, 2.25, 7.0, 7.0, 1.0]])
def test_quantiles_match_numpy(values):
    s = sorted(values)
    for q in (0.25, 0.5, 0.75):
        assert quantile(s, q) == pytest.approx(float(np.percentile(values, 100 * q)))


def test_summarize_known_samples():
    row = summarize([10.0, 12.0, 11.0, 30.0, 10.5])
    assert row["latency_ms_median"] == 11.0
    assert (row["latency_ms_q1"], row["latency_ms_q3"]) == (10.5, 12.0)
    assert row["latency_ms_iqr"] == pytest.approx(1.5)
    assert row["latency_n"] == 5 and row["latency_samples_ms"] == [10.0, 12.0, 11.0, 30.0, 10.5]
    assert row["latency_noisy"] is True  # 1.5 / 11 > 0.10
    assert summarize([10.0, 10.1, 10.2, 10.3])["latency_noisy"] is False


def test_columns_and_counts_forward():
    mods = []
    row = measure(make_ctx(lambda: mods.append(Counting()) or mods[-1], settings={"latency": FAST}))
    assert set(row) == COLUMNS
    assert row["latency_n"] == 4 and len(row["latency_samples_ms"]) == 4
    assert mods[0].calls == 2 + 4  # warm-up + timed
    assert row["latency_timer"] == "perf_counter" and row["compile_time_s"] is None
    assert row["threads"] == torch.get_num_threads()
    assert all(s >= 0 for s in row["latency_samples_ms"])
    assert row["latency_ms_q1"] <= row["latency_ms_median"] <= row["latency_ms_q3"]
    assert not mods[0].training  # forward = eval mode


def test_forward_backward_resets_grads_each_call():
    mods = []
    ctx = make_ctx(lambda: mods.append(Counting()) or mods[-1], pass_="forward_backward", settings={"latency": FAST})
    row = measure(ctx)
    m = mods[0]
    assert row["latency_n"] == 4 and m.calls == 6 and m.training
    assert all(m.grad_was_none)
    assert m.fc.weight.grad is not None  # backward did run


def test_max_repeats_caps_and_min_repeats_floors():
    capped = measure(make_ctx(ToyLinear, settings={"latency": {"min_time_s": 1e9, "min_repeats": 2, "max_repeats": 7}}))
    assert capped["latency_n"] == 7
    floored = measure(make_ctx(ToyLinear, settings={"latency": {"min_time_s": 0.0, "min_repeats": 3}}))
    assert floored["latency_n"] == 3


def test_min_time_keeps_sampling():
    settings = {"latency": {"min_time_s": 0.05, "min_repeats": 1, "max_repeats": 10**6}}
    row = measure(make_ctx(ToyLinear, settings=settings))
    assert sum(row["latency_samples_ms"]) >= 50.0


def test_threads_setting_applied_and_restored():
    before = torch.get_num_threads()
    row = measure(make_ctx(ToyLinear, settings={"latency": {**FAST, "threads": 1}}))
    assert row["threads"] == 1 and torch.get_num_threads() == before


def test_compile_bookkeeping(monkeypatch):
    # a stand-in for torch.compile whose wrapper counts calls: the compiling first call is timed apart
    calls = []

    def fake_compile(module):
        return lambda x: (calls.append(1), module(x))[1]

    monkeypatch.setattr(_passes.torch, "compile", fake_compile)
    settings = {"latency": {**FAST, "compile_warmup": 3}}
    row = measure(make_ctx(ToyLinear, mode="compile", settings=settings))
    assert isinstance(row["compile_time_s"], float) and row["compile_time_s"] >= 0
    assert len(calls) == 1 + 3 + 4 and row["latency_n"] == 4


def test_compile_failure_is_clear(monkeypatch):
    def broken(module):
        def call(x):
            raise RuntimeError("backend exploded\nlong traceback")

        return call

    monkeypatch.setattr(_passes.torch, "compile", broken)
    expected = r"torch.compile failed for 'toy' on the first call: RuntimeError: backend exploded$"
    with pytest.raises(CompileError, match=expected):
        measure(make_ctx(ToyLinear, mode="compile", settings={"latency": FAST}))


def test_compile_oom_is_not_wrapped(monkeypatch):
    def oom(module):
        def call(x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

        return call

    monkeypatch.setattr(_passes.torch, "compile", oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        measure(make_ctx(ToyLinear, mode="compile", settings={"latency": FAST}))


def test_real_compile_reports_compile_time():
    settings = {"latency": {**FAST, "compile_warmup": 1}}
    row = measure(make_ctx(lambda: ToyLinear(8, 8), mode="compile", settings=settings))
    assert row["compile_time_s"] > 0 and row["latency_n"] == 4


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"min_repeats": 0}, "min_repeats=0 must be >= 1"),
        ({"min_repeats": 5, "max_repeats": 2}, "max_repeats=2 must be >= min_repeats=5"),
        ({"warmup": "3"}, r"settings.latency.warmup='3' has type str, expected an int"),
        ({"repeats": 3}, r"unknown option\(s\) \['repeats'\]"),
        ({"min_time_s": -1}, "min_time_s=-1.0 must be >= 0"),
    ],
)
def test_bad_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        measure(make_ctx(ToyLinear, settings={"latency": bad}))


def test_bad_pass_and_mode():
    with pytest.raises(ValueError, match="pass='backward' is not allowed"):
        measure(make_ctx(ToyLinear, pass_="backward", settings={"latency": FAST}))
    with pytest.raises(ValueError, match="mode='graph' is not allowed"):
        measure(make_ctx(ToyLinear, mode="graph", settings={"latency": FAST}))
