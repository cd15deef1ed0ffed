"""A ``topk`` override reaches every DBRA/BRA slot, capped at the slot's n_win² (what an accuracy ablation of top-k
across a whole backbone needs: a late stage of a small image has fewer regions than an early one)."""
from __future__ import annotations

import pytest

from attentions import models
from attentions.models.swap import apply_overrides


def _topks(net) -> list[int]:
    return [m.config.topk for m in net.modules() if type(m).__name__ in ("DBRA", "BRA")]


@pytest.mark.parametrize("topk, expected", [(16, [16, 16, 16, 16, 4, 4, 1, 1]), (2, [2, 2, 2, 2, 2, 2, 1, 1])])
def test_topk_override_is_capped_per_slot(topk, expected):
    # tiny at 32 px: stage grids 8, 4, 2, 1 -> 4, 4, 2, 1 regions per side -> at most 16, 16, 4, 1 regions
    net = models.create_model("swap", attention="dbra", macro="tiny", img_size=32, num_classes=10,
                              attn_overrides={"topk": topk})
    assert _topks(net) == expected


def test_the_cap_follows_an_overridden_n_win():
    slots = [[("dbra", {"n_win": 4, "topk": 4})]]
    assert apply_overrides(slots, {"topk": 9, "n_win": 2}) == [[("dbra", {"n_win": 2, "topk": 4})]]
    assert apply_overrides(slots, {"topk": 9}) == [[("dbra", {"n_win": 4, "topk": 9})]]
