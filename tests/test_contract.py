"""The shape contract, checked for every registered attention (a new mechanism is covered for free, as in timm)."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

import attentions
from attnbench.cli import main

#: the smallest keywords that let each default config take any H x W
ANY_SIZE = {"bra": {"auto_pad": True}, "dbra": {"auto_pad": True}}


def build(name: str, **kw):
    torch.manual_seed(0)
    return attentions.build(name, dim=32, num_heads=2, **ANY_SIZE.get(name, {}), **kw).eval()


@pytest.mark.parametrize("name", attentions.available())
@pytest.mark.parametrize("B, H, W", [(1, 14, 14), (2, 9, 13)])
def test_forward_keeps_the_channels_last_shape(name, B, H, W):
    x = torch.randn(B, H, W, 32)
    out = build(name)(x)
    assert out.shape == (B, H, W, 32) and out.dtype == x.dtype and torch.isfinite(out).all()


@pytest.mark.parametrize("name", attentions.available())
def test_batch_elements_are_independent(name):
    # each image's output depends on that image alone: batching changes nothing
    m = build(name)
    x = torch.randn(3, 14, 14, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x)[1:2], m(x[1:2]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", attentions.available())
def test_bfloat16_runs_and_keeps_dtype(name):
    m = build(name).to(torch.bfloat16)
    out = m(torch.randn(1, 14, 14, 32, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


@pytest.mark.parametrize("name", attentions.available())
def test_cost_model_reports_every_part(name):
    cost = build(name).cost(28, 28)
    assert cost.total > 0 and cost.keys_per_query > 0
    assert set(cost.macs) == {"projections", "routing", "attention", "offsets_sampling_rpe", "lce"}


def test_list_command_shows_every_mechanism_with_its_fields():
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0, result.output
    for name in ["mhsa", "bra", "dbra", "dat", "agent"]:
        assert any(line.startswith(name + " ") for line in result.output.splitlines()), name
    assert "offset_channels" in result.output and "agent_num" in result.output
