"""Every preset derives its slot configs from ``img_size``: at 224 it is exactly the official build, at another
size each slot is made for that size's token grids, and the ``_iso`` presets train at 32 px."""
from __future__ import annotations

import pytest
import torch

from attentions import models
from attentions.models.presets import ISO_MLP_RATIOS, build_backbone
from attentions.models.swap import MACROS, slot_config

OFFICIAL = ("debiformer_t", "debiformer_s", "debiformer_b", "biformer_t", "biformer_s", "biformer_b")
SWAPS = tuple(f"debiformer_t_swap_{a}{iso}" for a in models.SWAP_ATTENTIONS for iso in ("", "_iso"))
#: the token grids of a 224² input, written out: the constants the official code hard-codes (rpe 56/28/14/7)
GRIDS_224 = (56, 28, 14, 7)


def _reference_224(name: str, **kwargs) -> torch.nn.Module:
    """The preset as it was built before ``img_size`` existed: slot configs from the literal 224² grids."""
    macro = MACROS[name.split("_swap_")[0]]

    def cfg(attention: str, i: int):
        return attention, slot_config(attention, i, macro, GRIDS_224[i])

    if "_swap_" in name:
        attention = name.split("_swap_")[1].removesuffix("_iso")
        slots = [[cfg(attention, i)] * 2 for i in range(4)]
        if name.endswith("_iso"):
            kwargs["mlp_ratios"] = (ISO_MLP_RATIOS[attention],) * 4
    elif name.startswith("debiformer"):
        slots = [[cfg("bra", i), cfg("dbra", i)] for i in range(3)] + [[cfg("dbra", 3)] * 2]
    else:
        slots = [[cfg("bra", i)] for i in range(3)] + [[cfg("attention_lepe", 3)]]
    return build_backbone(macro, slots, **kwargs)


def _layout(model: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _configs(model: torch.nn.Module) -> dict[str, object]:
    return {p: getattr(m, "config", type(m).__name__) for p, m in model.attention_slots().items()}


@pytest.mark.parametrize("name", OFFICIAL + SWAPS)
def test_default_and_224_are_the_official_build(name):
    """Default, explicit 224 and the literal-grid reference agree on every tensor's name and shape and on every
    slot's config (the official checkpoints and the published params/MACs depend on exactly these)."""
    with torch.device("meta"):
        default, explicit, reference = (models.create_model(name), models.create_model(name, img_size=224),
                                        _reference_224(name))
    assert _layout(default) == _layout(reference) == _layout(explicit)
    assert _configs(default) == _configs(reference) == _configs(explicit)


def _dbra_and_bra(model) -> tuple[list, list]:
    slots = [(type(m).name, m.config) for m in model.attention_slots().values() if hasattr(m, "config")]
    return [c for n, c in slots if n == "dbra"], [c for n, c in slots if n == "bra"]


@pytest.mark.parametrize("size, grids, n_win, stride", [
    (256, (64, 32, 16, 8), (4, 4, 4, 4), (16, 8, 4, 2)),   # 64 has no divisor 5-7: four regions per side
    (384, (96, 48, 24, 12), (6, 6, 6, 6), (16, 8, 4, 2)),
    (32, (8, 4, 2, 1), (4, 4, 2, 1), (2, 1, 1, 1)),
])
def test_debiformer_slots_follow_the_size(size, grids, n_win, stride):
    with torch.device("meta"):
        model = models.create_model("debiformer_t", img_size=size)
    dbra, bra = _dbra_and_bra(model)
    first = {c.dim: c for c in dbra}  # one config per stage width (stage 4 has two equal slots)
    assert [first[d].rpe_size for d in (64, 128, 256, 512)] == list(grids)
    assert [first[d].n_win for d in (64, 128, 256, 512)] == list(n_win)
    assert [first[d].offset_stride for d in (64, 128, 256, 512)] == list(stride)
    assert [first[d].topk for d in (64, 128, 256, 512)] == [min(k, s * s) for k, s in zip((4, 8, 16, 49), n_win)]
    assert sorted({(c.dim, c.n_win, c.topk) for c in bra}) == [
        (d, s, min(k, s * s)) for d, s, k in zip((64, 128, 256), n_win, (1, 4, 16))]


def test_biformer_and_swap_presets_follow_the_size():
    with torch.device("meta"):
        biformer = models.create_model("biformer_s", img_size=384)
        agent = models.create_model("debiformer_t_swap_agent_iso", img_size=32)
        dat = models.create_model("debiformer_t_swap_dat", img_size=256)
    assert {m.config.n_win for m in biformer.attention_slots().values() if hasattr(m, "config")} == {6}
    agents = {m.config.dim: (m.config.agent_num, m.config.window_size) for m in agent.attention_slots().values()}
    assert agents == {64: (9, 8), 128: (16, 4), 256: (4, 2), 512: (1, 1)}  # (9, 16, 49, 49) capped at grid²
    assert agent.stages[0][0].mlp1.linear1[0].out_channels == int(ISO_MLP_RATIOS["agent"] * 64)
    dats = {m.config.dim: (m.config.rpe_size, m.config.stride) for m in dat.attention_slots().values()}
    assert dats == {64: (64, 16), 128: (32, 8), 256: (16, 4), 512: (8, 2)}


@pytest.mark.parametrize("attention", models.SWAP_ATTENTIONS)
def test_iso_preset_trains_at_32px(attention):
    """The accuracy smoke size: finite logits and a gradient on every parameter of the 21.5 M-param preset."""
    torch.manual_seed(0)
    model = models.create_model(f"debiformer_t_swap_{attention}_iso", img_size=32, num_classes=8)
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 8) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


def test_official_preset_runs_at_another_size():
    torch.manual_seed(0)
    model = models.create_model("debiformer_t", img_size=64, num_classes=4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)


@pytest.mark.parametrize("name", ["debiformer_t", "biformer_t", "debiformer_t_swap_bra_iso", "swap"])
@pytest.mark.parametrize("size", [0, "224", 22.4, True])
def test_bad_img_size_names_it(name, size):
    kwargs = {"attention": "bra"} if name == "swap" else {}
    with pytest.raises(ValueError, match=r"img_size=.* is not allowed: expected a positive int"):
        models.create_model(name, img_size=size, **kwargs)
