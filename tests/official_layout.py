"""Official-layout state dicts for the attention tests: random tensors of the documented shapes, and the check that
``attentions.from_official`` puts every one of them, unchanged, under its own key."""
from __future__ import annotations

import pytest
import torch

import attentions


def random_state_dict(shapes: dict) -> dict[str, torch.Tensor]:
    """{key: a random tensor of that shape} for an official key -> shape table."""
    return {k: torch.randn(s) for k, s in shapes.items()}


def assert_loads_every_tensor(name: str, sd: dict[str, torch.Tensor], **config) -> None:
    """``from_official(name, sd, **config)`` has exactly sd's keys, each holding sd's tensor."""
    own = attentions.from_official(name, sd, **config).state_dict()
    assert set(own) == set(sd)
    for key in sd:
        assert torch.equal(own[key], sd[key]), key


def assert_mismatches_listed(name: str, shapes: dict, config: dict, drop: str, wrong: tuple[str, tuple],
                             message: str) -> None:
    """Drop key ``drop`` and give key ``wrong[0]`` the shape ``wrong[1]``: ``from_official`` raises
    OfficialStateDictError listing the missing key, and its message contains ``message`` (the misshapen key)."""
    sd = random_state_dict(shapes)
    del sd[drop]
    sd[wrong[0]] = torch.randn(wrong[1])
    with pytest.raises(attentions.OfficialStateDictError) as e:
        attentions.from_official(name, sd, **config)
    assert e.value.missing == [drop]
    assert message in str(e.value)
