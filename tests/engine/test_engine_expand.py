"""Suite expansion: product order, zip, exclude, skipped cells with reasons, devices, stable cell ids, --only."""
from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

import engine_fakes as fakes

from attnbench.suite.cells import Cell, expand, parse_only
from attnbench.core.errors import UserError
from attnbench.suite.probe import Probe
from attnbench.suite.load import suite_from_dict

TINY = fakes.dotted("Tiny")


def make(**overrides):
    data = fakes.tiny_suite(metrics=["params"])
    data.update(overrides)
    return suite_from_dict(data)


def key(c: Cell) -> tuple:
    return (c.label, c.height, c.width, c.batch, c.pass_)


def test_product_in_axis_order_last_axis_fastest():
    suite = make(attentions=[{"name": TINY, "label": "a"}, {"name": TINY, "label": "b", "config": {"scale": 2.0}}],
                 baseline="a")
    cells = expand(suite, cuda_available=False).cells
    expected = [(label, r, r, b, p) for label, r, b, p in
                itertools.product("ab", [4, 6], [1, 2], ["forward", "forward_backward"])]
    assert [key(c) for c in cells] == expected
    assert cells[4].config == {} and cells[8].config == {"scale": 2.0}
    assert {(c.dtype, c.device, c.mode) for c in cells} == {("float32", "cpu", "eager")}


def test_zip_varies_axes_together():
    suite = make(axes={"resolution": [4, [6, 8], 10], "batch": [8, 4, 2], "pass": ["forward", "forward_backward"],
                       "device": ["cpu"]}, zip=[["batch", "resolution"]])
    cells = expand(suite, cuda_available=False).cells
    assert [(c.height, c.width, c.batch, c.pass_) for c in cells] == [
        (4, 4, 8, "forward"), (4, 4, 8, "forward_backward"),
        (6, 8, 4, "forward"), (6, 8, 4, "forward_backward"),
        (10, 10, 2, "forward"), (10, 10, 2, "forward_backward"),
    ]


def test_exclude_drops_exactly_the_matching_cells():
    suite = make(exclude=[{"resolution": 6, "batch": 2, "pass": "forward_backward"},
                          {"label": "ti*", "resolution": [4, 4], "batch": [1, 2], "pass": "forward"},
                          {"batch": 16}])
    out = expand(suite, cuda_available=False)
    assert sorted(key(c) for c in out.cells) == sorted([
        ("tiny", 4, 4, 1, "forward_backward"), ("tiny", 4, 4, 2, "forward_backward"),
        ("tiny", 6, 6, 1, "forward"), ("tiny", 6, 6, 1, "forward_backward"), ("tiny", 6, 6, 2, "forward"),
    ])
    assert out.excluded == 3
    assert out.unused_excludes == [2]


def test_invalid_cells_are_skipped_with_the_reason():
    suite = make(attentions=[{"name": TINY, "label": "even", "config": {"even_only": True}},
                             {"name": TINY, "label": "neg", "config": {"scale": -1.0}}],
                 axes={"resolution": [4, [6, 5]], "device": ["cpu"]}, baseline="even")
    out = expand(suite, cuda_available=False, probe=Probe())
    assert [key(c) for c in out.cells] == [("even", 4, 4, 1, "forward")]
    assert [(key(c), r) for c, r in out.skipped] == [
        (("even", 6, 5, 1, "forward"), "tiny: H=6, W=5 must both be even"),
        (("neg", 4, 4, 1, "forward"), "attention: scale=-1.0 is not allowed: expected a positive number"),
        (("neg", 6, 5, 1, "forward"), "attention: scale=-1.0 is not allowed: expected a positive number"),
    ]


def test_real_region_attention_without_auto_pad_is_skipped_off_grid():
    suite = suite_from_dict({"name": "r", "attentions": [{"name": "bra", "config": {"dim": 32, "num_heads": 2}}],
                             "axes": {"resolution": [14, 15], "device": ["cpu"]}, "metrics": ["params"],
                             "baseline": "bra"})
    out = expand(suite, cuda_available=False, probe=Probe())
    assert [(c.height, c.width) for c in out.cells] == [(14, 14)]
    (cell, reason), = out.skipped
    assert cell.height == 15 and "n_win=7" in reason and "auto_pad" in reason


def test_devices_resolve_and_missing_cuda_is_skipped():
    suite = make(axes={"resolution": [4], "device": ["cuda_if_available", "cuda", "cpu"]})
    cpu_box = expand(suite, cuda_available=False)
    # cuda_if_available and cpu become the same cell here, kept once
    assert [c.device for c in cpu_box.cells] == ["cpu"]
    assert [(c.device, r) for c, r in cpu_box.skipped] == [
        ("cuda", "device 'cuda' is not available here (torch.cuda.is_available() is False)")]
    gpu_box = expand(suite, cuda_available=True)
    assert [c.device for c in gpu_box.cells] == ["cuda", "cpu"] and not gpu_box.skipped
    forced = expand(suite, cuda_available=True, device="cpu")
    assert [c.device for c in forced.cells] == ["cpu"]


def test_exclude_matches_the_concrete_device():
    suite = make(axes={"resolution": [4, 6], "device": ["cuda_if_available"]},
                 exclude=[{"resolution": 6, "device": "cpu"}])
    assert [c.height for c in expand(suite, cuda_available=False).cells] == [4]
    assert [c.height for c in expand(suite, cuda_available=True).cells] == [4, 6]


def test_cell_id_is_pinned():
    """Resume and ``--only`` match ids persisted in earlier runs, so the ids are literal here: a change to the
    recipe (the first 12 hex digits of the SHA-1 of the canonical identity JSON) must fail this test."""
    cell = Cell("s", "dbra", "dbra-topk8", {"topk": 8, "dim": 64}, 56, 28, 8, "float32", "cpu",
                "forward_backward", "eager")
    assert cell.cell_id == "f794ec2a90a0"
    assert Cell.from_identity(cell.identity()) == cell
    # config key order does not matter; any identity field does
    same = Cell("s", "dbra", "dbra-topk8", {"dim": 64, "topk": 8}, 56, 28, 8, "float32", "cpu",
                "forward_backward", "eager")
    assert same.cell_id == "f794ec2a90a0"
    changed = {f: Cell(**{**cell.__dict__, f: v}).cell_id for f, v in
               [("suite", "t"), ("label", "x"), ("config", {"topk": 4, "dim": 64}), ("height", 28), ("batch", 1),
                ("dtype", "bfloat16"), ("device", "cuda"), ("pass_", "forward"), ("mode", "compile")]}
    assert changed == {"suite": "a8a5f3a81b1b", "label": "28a1216481ef", "config": "5a69cb156997",
                       "height": "6c5b182e9626", "batch": "d185dea67739", "dtype": "836b7a7d2ae9",
                       "device": "f05463512624", "pass_": "3beeb1ab1f3d", "mode": "e3603e436efe"}


def test_cell_ids_are_stable_across_loads():
    ids = ["1cbb4ce6d8f3", "ccf946226d03", "dd84e58b67d3", "54bd31b0fa89",
           "536fbedc30dd", "6befccf6ecfe", "08eebc926c18", "88a1631df26f"]
    assert [c.cell_id for c in expand(make(), cuda_available=False).cells] == ids
    assert [c.cell_id for c in expand(make(), cuda_available=False).cells] == ids


@pytest.mark.parametrize("expr, expected", [
    ("pass=forward", 4),
    ("pass=forward,batch=2", 2),
    ("resolution=6|4x4,batch=1", 4),
    ("batch=1,batch=2,pass=forward_backward", 4),
    ("tiny", 8),
    ("tin?", 8),
    ("label=nope", 0),
    ("resolution=6x*", 4),
])
def test_only_filter(expr, expected):
    out = expand(make(), cuda_available=False).select(parse_only(expr))
    assert len(out.cells) == expected
    if expr == "pass=forward,batch=2":
        assert {(c.pass_, c.batch) for c in out.cells} == {("forward", 2)}


def test_only_selects_by_cell_id():
    cells = expand(make(), cuda_available=False).cells
    picked = expand(make(), cuda_available=False).select(parse_only(f"cell_id={cells[3].cell_id}")).cells
    assert picked == [cells[3]]


@pytest.mark.parametrize("expr, message", [
    ("atention=bra", "--only: unknown key 'atention'; did you mean 'attention'?"),
    ("batch=", "--only: term 'batch=' has no pattern after '='"),
    ("resolution=0", "--only: resolution: expected a positive integer"),
    (",", "--only: expected terms like"),
])
def test_only_errors(expr, message):
    with pytest.raises(UserError) as info:
        parse_only(expr)
    assert info.value.message.startswith(message)


def test_suite_and_cells_do_not_import_torch():
    """The schema and the expansion are pure (architecture.md): checking a suite's structure needs no torch."""
    code = "import sys, attnbench.suite.schema, attnbench.suite.cells; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
