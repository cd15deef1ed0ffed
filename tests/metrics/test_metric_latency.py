"""latency: statistics against numpy, the stopping rule and call counts (never speeds), compile bookkeeping, the
noisy flag on the sample sets that fooled it before, and — under fake clocks — stopping at the target, the budget,
preempted samples left out and counted, and paired rounds."""
import platform

import numpy as np
import pytest
import torch
from metric_toys import ToyLinear, make_ctx
from torch import nn

from attnbench.metrics import _passes, get_metric
from attnbench.metrics._passes import CompileError
from attnbench.metrics._settings import metric_settings_errors
from attnbench.metrics.latency import _merge, finish_row, quantile, summarize

measure = get_metric("latency")
# four rounds in one epoch, then stop at max_repeats; no re-warm (short_call_s 0) so call counts are exact
FAST = {"min_time_s": 0.0, "min_repeats": 4, "max_repeats": 4, "warmup": 2, "min_block_s": 0.0, "short_call_s": 0.0,
        "epoch_s": 1e9, "min_epochs": 1}

COLUMNS = {
    "latency_ms_median", "latency_ms_q1", "latency_ms_q3", "latency_ms_iqr", "latency_n", "latency_samples_ms",
    "latency_noisy", "latency_timer", "compile_time_s", "threads", "latency_ms_ci_low", "latency_ms_ci_high",
    "latency_block", "latency_stop", "flush_denormal", "subnormal_params", "subnormal_outputs",
    "latency_n_used", "latency_preempted", "latency_preempted_mask", "latency_epochs", "latency_epoch_sizes",
    "latency_cpu_ms", "latency_spent_s", "latency_budget_s", "latency_target_rel_ci", "latency_rewarm",
    "latency_processes", "latency_rel_ci", "latency_noisy_rel_ci", "latency_noisy_reason",
    "latency_faults_per_call", "malloc",
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
    assert (row["latency_ms_ci_low"], row["latency_ms_ci_high"]) == (10.0, 30.0)  # n = 5: the full range


def test_summarize_leaves_preempted_samples_out_but_keeps_them():
    samples = [10.0, 10.2, 95.0, 10.1, 10.3, 80.0, 10.0, 10.2]
    mask = [False, False, True, False, False, True, False, False]
    row = summarize(samples, mask)
    assert row["latency_samples_ms"] == samples and row["latency_preempted_mask"] == mask
    assert row["latency_n"] == 8 and row["latency_n_used"] == 6 and row["latency_preempted"] == 2
    assert row["latency_ms_median"] == pytest.approx(10.15)
    assert row["latency_ms_ci_high"] <= 10.3


def test_epoch_spread_widens_the_interval():
    """Three epochs that disagree by 10% give a wide interval even though each is tight on its own (a bootstrap
    of the pooled samples would call it ±1%)."""
    epochs = [[10.0, 10.01, 9.99, 10.0], [11.0, 11.01, 10.99, 11.0], [10.5, 10.49, 10.51, 10.5]]
    flat = [v for e in epochs for v in e]
    row = summarize(flat, epoch_sizes=[4, 4, 4])
    assert row["latency_epochs"] == 3
    half = max(row["latency_ms_median"] - row["latency_ms_ci_low"], row["latency_ms_ci_high"] - row["latency_ms_median"])
    assert half / row["latency_ms_median"] > 0.05
    one_epoch = summarize(flat, epoch_sizes=[12])
    assert one_epoch["latency_ms_ci_high"] - one_epoch["latency_ms_ci_low"] < row["latency_ms_ci_high"] - row["latency_ms_ci_low"]


@pytest.mark.parametrize("samples", [
    [24.0, 24.0],                                   # two samples on the scheduler quantum: nothing to judge by
    [0.14, 0.18],                                   # the same cell in a quiet run: two samples are never enough
    [0.15] * 12 + [24.0] * 6 + [48.0] * 4 + [280.0] * 2,   # quantum-sized preemptions in a third of the samples
    [10.0 + (i % 2) * 3.0 for i in range(6)],       # bimodal and few: the median's interval spans both modes
])
def test_noisy_flag_fires_on_the_reported_cases(samples):
    row = finish_row(summarize(samples, epoch_sizes=[len(samples) // 2, len(samples) - len(samples) // 2]), 0.10)
    assert row["latency_noisy"] is True and row["latency_noisy_reason"]


def test_tight_samples_are_not_noisy():
    row = finish_row(summarize([10.0, 10.1, 10.2, 10.3, 10.15, 10.05] * 3, epoch_sizes=[6, 6, 6]), 0.10)
    assert row["latency_noisy"] is False and row["latency_noisy_reason"] is None


def test_median_interval_columns_bracket_the_median():
    row = finish_row(summarize([float(v) for v in range(1, 41)]), 0.10)
    assert row["latency_ms_ci_low"] < row["latency_ms_median"] < row["latency_ms_ci_high"]
    assert row["latency_noisy"] is True  # 1..40 spreads far more than 10%


def test_columns_and_counts_forward():
    mods = []
    row = measure(make_ctx(lambda: mods.append(Counting()) or mods[-1], settings={"latency": FAST}))
    assert set(row) == COLUMNS
    assert row["latency_n"] == 4 and len(row["latency_samples_ms"]) == 4
    assert mods[0].calls == 2 + 1 + 1 + 4  # warm-up + the block-sizing call + the subnormal check + timed
    assert row["latency_timer"] == "perf_counter+process_time" and row["compile_time_s"] is None
    assert row["threads"] == torch.get_num_threads()
    assert all(s >= 0 for s in row["latency_samples_ms"])
    assert row["latency_ms_q1"] <= row["latency_ms_median"] <= row["latency_ms_q3"]
    assert not mods[0].training  # forward = eval mode


def test_forward_backward_resets_grads_each_call():
    mods = []
    ctx = make_ctx(lambda: mods.append(Counting()) or mods[-1], pass_="forward_backward", settings={"latency": FAST})
    row = measure(ctx)
    m = mods[0]
    assert row["latency_n"] == 4 and m.calls == 8 and m.training
    assert all(m.grad_was_none[:3] + m.grad_was_none[4:])  # [3]: the subnormal check's no-grad forward
    assert m.fc.weight.grad is not None  # backward did run


def test_max_repeats_caps():
    capped = measure(make_ctx(ToyLinear, settings={"latency": {**FAST, "min_repeats": 2, "max_repeats": 7,
                                                               "target_rel_ci": 1e-9}}))
    assert capped["latency_n"] == 7 and capped["latency_stop"] == "max_repeats"


def test_time_budget_stops_after_five_samples():
    # preempt_fraction 0.99: on a loaded machine a preempted sample would (rightly) need a sixth
    settings = {"latency": {**FAST, "min_repeats": 50, "max_repeats": 1000, "max_time_s": 1e-9, "epoch_s": 0.0,
                            "preempt_fraction": 0.99}}
    row = measure(make_ctx(ToyLinear, settings=settings))
    assert row["latency_n"] == 5 and row["latency_stop"] == "budget"


def test_fast_calls_are_timed_in_blocks():
    mods = []
    settings = {"latency": {**FAST, "min_block_s": 0.05}}  # a toy call takes microseconds: blocks of many calls
    row = measure(make_ctx(lambda: mods.append(Counting()) or mods[-1], settings=settings))
    assert row["latency_block"] > 1
    assert mods[0].calls == 2 + 1 + 1 + 4 * row["latency_block"]
    assert row["latency_ms_median"] < 50.0  # the per-call mean, not the block's time


def test_min_time_keeps_sampling():
    settings = {"latency": {**FAST, "min_time_s": 0.05, "min_repeats": 1, "max_repeats": 10**6, "epoch_s": 0.0,
                            "target_rel_ci": 10.0}}
    row = measure(make_ctx(ToyLinear, settings=settings))
    assert row["latency_spent_s"] >= 0.05 and row["latency_stop"] == "target"


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
    assert len(calls) == 1 + 3 + 1 + 4 and row["latency_n"] == 4


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
    "bad, message",
    [
        ({"min_repeats": 0}, "settings.latency.min_repeats: expected greater than or equal to 1, got 0"),
        ({"min_repeats": 5, "max_repeats": 2}, "settings.latency: max_repeats=2 must be >= min_repeats=5"),
        ({"warmup": "3"}, "settings.latency.warmup: expected an integer, got '3'"),
        ({"warmup": True}, "settings.latency.warmup: expected an integer, got True"),
        ({"repeats": 3}, "settings.latency.repeats: unknown key; did you mean 'min_repeats'? (allowed: warmup, "),
        ({"min_time_s": -1}, "settings.latency.min_time_s: expected greater than or equal to 0, got -1"),
        ({"target_rel_ci": 0}, "settings.latency.target_rel_ci: expected greater than 0, got 0"),
        ({"preempt_fraction": 1.5}, "settings.latency.preempt_fraction: expected less than 1, got 1.5"),
        ({"suite_budget_s": "lots"}, "settings.latency.suite_budget_s: expected a number, got 'lots'"),
        ({"processes": 0}, "settings.latency.processes: expected greater than or equal to 1, got 0"),
    ],
)
def test_bad_settings_get_one_message_at_load_and_at_run_time(bad, message):
    with pytest.raises(ValueError) as run_time:
        measure(make_ctx(ToyLinear, settings={"latency": bad}))
    assert str(run_time.value).startswith(message)
    [(path, text)] = metric_settings_errors("latency", "latency", bad)  # what loading the suite says
    assert f"{path}: {text}" == str(run_time.value)


def test_settings_defaults_and_numbers():
    from attnbench.metrics.latency import DEFAULTS, Settings

    assert DEFAULTS == Settings().model_dump() and DEFAULTS["max_repeats"] == 1000 and DEFAULTS["threads"] is None
    merged = _merge({"budget_s": 2, "threads": 2})
    assert merged["budget_s"] == 2.0 and isinstance(merged["budget_s"], float) and merged["threads"] == 2


def test_bad_pass_and_mode():
    with pytest.raises(ValueError, match="pass='backward' is not allowed"):
        measure(make_ctx(ToyLinear, pass_="backward", settings={"latency": FAST}))
    with pytest.raises(ValueError, match="mode='graph' is not allowed"):
        measure(make_ctx(ToyLinear, mode="graph", settings={"latency": FAST}))


class Tiny(nn.Module):
    """A module with one subnormal weight (as some official inits leave behind) and an output that keeps it."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.full((8,), 1e-40))

    def forward(self, x):
        return x * self.w


def test_subnormals_are_counted_and_flushing_recorded(cpu_flushes_denormals):
    row = measure(make_ctx(Tiny, settings={"latency": {**FAST, "flush_denormal": False}}))
    assert row["subnormal_params"] == 8
    assert row["flush_denormal"] is False
    on = measure(make_ctx(Tiny, settings={"latency": FAST}))
    if platform.machine() in ("x86_64", "AMD64"):  # every x86-64 CPU torch runs on has DAZ/FTZ
        assert cpu_flushes_denormals
    assert on["flush_denormal"] is cpu_flushes_denormals  # the default is on; False only where the CPU cannot
    if cpu_flushes_denormals:
        assert on["subnormal_outputs"] == 0  # x * 1e-40 is flushed to zero while timing
    torch.set_flush_denormal(False)


def test_compile_cells_reset_dynamo_once(monkeypatch):
    resets = []
    monkeypatch.setattr(_passes.torch._dynamo, "reset", lambda: resets.append(1))
    monkeypatch.setattr(_passes.torch, "compile", lambda module: module)
    base = make_ctx(ToyLinear, mode="compile", settings={"latency": FAST})
    ctx = make_ctx(ToyLinear, mode="compile", settings={"latency": FAST})
    ctx.baseline = base
    measure(ctx)
    assert resets == [1]  # the baseline compiled beside the cell must not discard the cell's graphs


class _Work(nn.Module):
    """Records its cost in the fake clock: ``units`` per call."""

    def __init__(self, clock, units):
        super().__init__()
        self.clock, self.units = clock, units
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        self.clock.pending += self.units
        self.clock.calls.append(self.units)
        return self.fc(x)


class FakeClock:
    """A timer whose reading is the work done times a load factor that changes every few samples, as bursts
    of load from other processes do; ``order`` logs which contender each sample timed."""

    def __init__(self):
        self.pending, self.samples, self.order = 0.0, 0, []
        self.calls, self.timed_at = [], []  # every forward's units; index in calls of each timed forward

    def time_call(self, fn):
        self.pending = 0.0
        self.timed_at.append(len(self.calls))
        fn()
        self.samples += 1
        load = 1.0 + 9.0 * ((self.samples // 7) % 2)  # 7 samples quiet, 7 slowed down 10x (not preempted), ...
        self.order.append(self.pending)
        wall = self.pending * load * 1e-3
        return wall, wall


def test_paired_rounds_cancel_load_bursts(monkeypatch):
    from attnbench.metrics import latency

    clock = FakeClock()
    monkeypatch.setattr(latency, "_timer", lambda device: ("fake", clock.time_call))
    settings = {"latency": {**FAST, "min_repeats": 30, "max_repeats": 30, "short_call_s": 1e9}}  # re-warm each
    ctx = make_ctx(lambda: _Work(clock, 2.0), settings=settings)
    ctx.baseline = make_ctx(lambda: _Work(clock, 1.0), settings=settings)
    ctx.baseline.label = "base"
    row = measure(ctx)
    # unpaired medians would mix quiet and loaded samples; the per-round ratio is exactly 2 in every round
    assert row["paired_ratio"] == 2.0 and row["paired_ratio_low"] == 2.0 and row["paired_ratio_high"] == 2.0
    assert row["paired_rounds"] == 30 and row["paired_baseline"] == "base" and len(row["paired_ratios"]) == 30
    timed = clock.order[-60:]  # the rounds: cell, base, cell, base, ...
    assert timed == [2.0, 1.0] * 30
    # each timed call follows an untimed call of the same module (the re-warm), never the other module's call
    for i in clock.timed_at[-60:]:
        assert clock.calls[i - 1] == clock.calls[i]
    assert row["latency_n"] == 30


def test_paired_off_times_the_cell_alone():
    ctx = make_ctx(ToyLinear, settings={"latency": {**FAST, "paired": False}})
    ctx.baseline = make_ctx(ToyLinear, settings={"latency": FAST})
    assert "paired_ratio" not in measure(ctx)
