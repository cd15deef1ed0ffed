"""The capacity metric: largest square grid within a memory budget, by growth and bisection."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from attnbench.metrics import capacity

from metric_toys import make_ctx


def _true_grid(law, budget: float, limit: int = 4096) -> int:
    return max(g for g in range(1, limit) if law(g) <= budget)


@pytest.mark.parametrize("exponent", [1.0, 1.5, 2.0])
def test_search_on_a_power_law_finds_the_grid_within_one_step(exponent):
    law = lambda g: int(1000 * (g * g) ** exponent)  # noqa: E731
    budget = 3e9
    found = capacity.search(law, budget, start_grid=14, step=4, max_grid=4096)
    truth = _true_grid(law, budget)
    assert found.grid <= truth < found.grid + 4
    assert found.limited_by == "budget"
    assert abs(found.predicted - truth) <= 1  # an exact power law: the extrapolation is exact
    assert found.exponent == pytest.approx(exponent)


def test_search_treats_out_of_memory_as_over_budget_and_bisects_down():
    law = lambda g: None if g > 50 else g * g  # noqa: E731 - "OOM" above 50, far below the budget
    found = capacity.search(law, 1e12, start_grid=14, step=2)
    assert 48 <= found.grid <= 50


def test_search_respects_max_grid():
    found = capacity.search(lambda g: g, 1e12, start_grid=10, step=4, max_grid=100)
    assert found.grid == 100 and found.limited_by == "max_grid"


class MemoryLaw(nn.Module):
    """Allocates ``a · N^p`` float32 elements (N = H·W) inside its forward: a known memory law."""

    def __init__(self, a: float, p: float):
        super().__init__()
        self.a, self.p = a, p

    def forward(self, x):
        n = x.shape[1] * x.shape[2]
        buf = torch.ones(int(self.a * n**self.p))
        return x * buf[0]


def test_capacity_on_a_toy_module_with_a_known_memory_law():
    a, p, step = 3.0, 1.5, 4
    budget_gib = 8 / 1024  # 8 MiB
    ctx = make_ctx(lambda: MemoryLaw(a, p), dim=1, settings={"capacity": {"budget_gib": budget_gib, "step": step}})
    row = capacity.measure(ctx)
    # bytes held at the peak: the buffer, then the output (B·H·W·C float32) while the buffer is alive
    law = lambda g: 4 * int(a * (g * g) ** p) + 4 * g * g  # noqa: E731
    truth = _true_grid(law, budget_gib * 2**30)
    assert abs(row["capacity_grid"] - truth) <= step
    assert row["capacity_limited_by"] == "budget"
    assert row["capacity_mem_exponent"] == pytest.approx(p, abs=0.05)
    assert abs(row["capacity_grid_predicted"] - truth) <= step
    assert row["capacity_agree"] is True
    assert row["capacity_budget_gib"] == pytest.approx(budget_gib)
    assert all(b is None or b > 0 for _, b in row["capacity_probes"])


def test_default_cpu_budget_is_documented_value():
    ctx = make_ctx(lambda: MemoryLaw(1.0, 1.0), dim=1, settings={"capacity": {"max_grid": 16}})
    row = capacity.measure(ctx)
    assert row["capacity_budget_gib"] == capacity.CPU_BUDGET_GIB == 1 / 32
    assert row["capacity_grid"] == 16 and row["capacity_limited_by"] == "max_grid"


def test_bad_settings_name_the_option():
    with pytest.raises(ValueError, match="settings.capacity.step: expected greater than or equal to 1, got 0"):
        capacity.measure(make_ctx(lambda: MemoryLaw(1.0, 1.0), settings={"capacity": {"step": 0}}))
    with pytest.raises(ValueError, match="settings.capacity.budget: unknown key; did you mean 'budget_gib'"):
        capacity.measure(make_ctx(lambda: MemoryLaw(1.0, 1.0), settings={"capacity": {"budget": 1.0}}))
