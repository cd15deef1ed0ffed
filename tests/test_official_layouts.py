"""Official checkpoints load into agent and DAT: every tensor of the documented layouts (the tables beside each
mechanism's tests, from the spec), and a wrong layout is refused with the keys named."""
from __future__ import annotations

import pytest

import test_agent
import test_dat
from official_layout import assert_loads_every_tensor, assert_mismatches_listed, random_state_dict

LAYOUTS = {"agent": test_agent.OFFICIAL, "dat": test_dat.OFFICIAL}
# per attention: the layout to break, the key dropped, the key given a wrong shape and the message that must name it
MISMATCHES = {
    "agent": ("Swin-T-stage2", "wa_bias", ("ah_bias", (1, 6, 16, 56, 1)),
              "ah_bias: got (1, 6, 16, 56, 1), expected (1, 6, 16, 28, 1)"),
    "dat": ("pp-T-stage1", "conv_offset.1.norm.bias", ("rpe_table", (2, 27, 27)),
            "rpe_table: got (2, 27, 27), expected (2, 111, 111)"),
}


@pytest.mark.parametrize("name, which", [(n, w) for n, layouts in LAYOUTS.items() for w in layouts])
def test_official_layout_loads(name, which):
    config, shapes = LAYOUTS[name][which]
    assert_loads_every_tensor(name, random_state_dict(shapes), **config)


@pytest.mark.parametrize("name", list(MISMATCHES))
def test_official_mismatches_are_listed(name):
    which, drop, wrong, message = MISMATCHES[name]
    config, shapes = LAYOUTS[name][which]
    assert_mismatches_listed(name, shapes, config, drop=drop, wrong=wrong, message=message)
