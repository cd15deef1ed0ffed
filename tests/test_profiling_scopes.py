"""The parts' profiler scopes (attentions/profiling.py): they put every counted multiply-add where cost() puts it,
they are inert off the profiler, and they nest."""
from __future__ import annotations

import pytest
import torch

import attentions
from attentions import profiling
from attentions.cost import PARTS
from attnbench.metrics._part_counts import OTHER, count_parts

#: the resolution sweep's attentions (suites/resolution_sweep.yaml)
SWEEP = {"mhsa": {}, "bra": {"auto_pad": True}, "dbra": {"auto_pad": True}, "dat": {}, "agent": {}}
SWEEP_GRIDS = (14, 28, 56, 84, 112)


def _check_parts(name: str, grid: int) -> None:
    module = attentions.build(name, dim=64, num_heads=2, **SWEEP[name])
    counts = count_parts(module, torch.randn(1, grid, grid, 64))
    cost = module.cost(grid, grid).macs
    assert counts.macs.get(OTHER, 0) == 0, f"{name}@{grid}: MACs outside every scope"
    for part in PARTS:
        assert counts.macs.get(part, 0) == cost[part], f"{name}@{grid}: {part} counted vs cost()"


@pytest.mark.parametrize("name", sorted(SWEEP))
def test_part_macs_match_cost_small(name):
    _check_parts(name, 14)


@pytest.mark.slow
@pytest.mark.parametrize("grid", SWEEP_GRIDS)
@pytest.mark.parametrize("name", sorted(SWEEP))
def test_part_macs_match_cost_on_sweep_grids(name, grid):
    _check_parts(name, grid)


def test_scope_names_and_parts():
    assert profiling.scope_name("dbra", "lce") == "attentions.dbra.lce"
    assert profiling.part_of_scope("attentions.dbra.offsets_sampling_rpe") == "offsets_sampling_rpe"
    assert profiling.part_of_scope("attentions.dbra.not_a_part") is None
    assert profiling.part_of_scope("aten::mm") is None


def test_scopes_do_not_touch_record_function_off_the_profiler(monkeypatch):
    """Off the profiler no scope opens record_function (~10 µs each even with no listener)."""
    def boom(*args, **kwargs):
        raise AssertionError("record_function opened with no profiler running")

    monkeypatch.setattr(torch.profiler, "record_function", boom)
    for name, cfg in SWEEP.items():
        attentions.build(name, dim=32, num_heads=2, **cfg)(torch.randn(1, 14, 14, 32))


def test_scopes_appear_under_the_profiler_and_nest():
    from torch.profiler import ProfilerActivity, profile

    module = attentions.build("dbra", dim=32, num_heads=2)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.no_grad():
            module(torch.randn(1, 14, 14, 32))
    names = {e.name for e in prof.events()}
    assert {f"attentions.dbra.{p}" for p in PARTS} <= names
    # the RPE lookup inside the back attention is its own scope, nested in attention, named after the enclosing
    # mechanism
    def ancestors(event):
        while event.cpu_parent is not None:
            event = event.cpu_parent
            yield event.name

    nested = [e for e in prof.events() if e.name == "attentions.dbra.offsets_sampling_rpe"
              and "attentions.dbra.attention" in ancestors(e)]
    assert nested


def test_observer_tracks_the_innermost_part():
    seen = []
    with profiling.observe_parts():
        with profiling.part("dat", "attention"):
            seen.append(profiling.current_part())
            with profiling.part(None, "offsets_sampling_rpe"):
                seen.append(profiling.current_part())
            seen.append(profiling.current_part())
        seen.append(profiling.current_part())
    assert seen == ["attention", "offsets_sampling_rpe", "attention", None]


@pytest.mark.slow
def test_scopes_add_no_measurable_time_off_the_profiler(tmp_path):
    """Paired, interleaved: this checkout's modules (with scopes) against main's (without), beside a noise floor of
    two identical modules measured the same way; the scopes' ratio must not stand out of that noise (timings are
    noisy on a shared machine: the bound is generous, 5% or the noise floor's own spread, whichever is larger)."""
    import importlib.util
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "main"], capture_output=True).returncode:
        pytest.skip("no 'main' revision to compare with")
    spec = importlib.util.spec_from_file_location("bench_scopes", root / "scripts" / "bench_scopes.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    base = bench.import_base("main", tmp_path)
    for row in bench.measure(["mhsa", "dbra"], 14, rounds=30, min_block_ms=5.0, base=base):
        scopes, noise = row["scopes"], row["noise"]
        allowed = max(0.05, abs(noise.estimate - 1) + (noise.high - noise.low) / 2)
        assert abs(scopes.estimate - 1) <= allowed, (row["attention"], scopes, noise)


@pytest.mark.parametrize("name", ["mhsa", "agent"])
def test_scopes_do_not_break_a_compiled_graph(name):
    torch._dynamo.reset()
    module = attentions.build(name, dim=32, num_heads=2)
    compiled = torch.compile(module, backend="eager", fullgraph=True)  # fullgraph: a graph break raises
    x = torch.randn(1, 14, 14, 32)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), module(x))
