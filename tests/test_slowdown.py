"""The ATTNBENCH_SLOWDOWN test hook: parses its spec, wraps only the named labels, leaves outputs, parameters and
gradients unchanged (its timing effect is measured in docs/metrics.md, never asserted)."""
import pytest
import torch

import attentions
from attnbench.engine.execute import build_module
from attnbench.engine.slowdown import Slowed, factor_for


def test_spec_parsing():
    assert factor_for("agent", "agent=1.5") == 1.5
    assert factor_for("dbra", "agent=1.5,d*=2") == 2.0
    assert factor_for("mhsa", "agent=1.5") == 1.0 and factor_for("mhsa", "") == 1.0
    for bad in ("agent", "agent=fast", "agent=0.5"):
        with pytest.raises(ValueError, match="LABEL_GLOB=FACTOR"):
            factor_for("agent", bad)


def test_only_the_named_label_is_wrapped_and_it_computes_the_same(monkeypatch):
    monkeypatch.setenv("ATTNBENCH_SLOWDOWN", "slow-agent=1.5")
    cpu = torch.device("cpu")
    slowed = build_module("agent", {"dim": 32, "num_heads": 2}, cpu, torch.float32, 0, label="slow-agent")
    plain = build_module("agent", {"dim": 32, "num_heads": 2}, cpu, torch.float32, 0, label="agent")
    assert isinstance(slowed, Slowed) and not isinstance(plain, Slowed)
    assert slowed.cost(14, 14).total == plain.cost(14, 14).total  # the wrapped attention's API shows through
    x = torch.randn(1, 14, 14, 32, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y2 = slowed(x), plain(x2)
    assert torch.equal(y, y2)
    y.sum().backward()
    y2.sum().backward()
    assert torch.equal(x.grad, x2.grad)
    assert [n.removeprefix("inner.") for n, _ in slowed.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert isinstance(attentions.build("agent", dim=32, num_heads=2), torch.nn.Module)
