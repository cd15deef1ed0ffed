"""A suite's ``seeds`` list: every entry's cells once per seed, the seed in the cell's identity and in the metrics'
context; suites without it keep their cell ids."""
from __future__ import annotations

import pytest

import engine_fakes as fakes

from attnbench.suite.cells import Cell, expand, parse_only
from attnbench.engine.execute import CellRunner
from attnbench.suite.schema import SuiteError
from attnbench.suite.load import suite_from_dict


def make(**overrides):
    data = fakes.tiny_suite(metrics=["params"], axes={"resolution": [4], "device": ["cpu"]})
    data.update(overrides)
    return suite_from_dict(data)


def test_seeds_multiply_the_cells_and_join_the_identity():
    plain = expand(make(), cuda_available=False).cells
    seeded = expand(make(seeds=[0, 7]), cuda_available=False).cells
    assert [c.seed for c in plain] == [None] and "seed" not in plain[0].identity()
    assert [c.seed for c in seeded] == [0, 7]
    assert [c.identity()["seed"] for c in seeded] == [0, 7]
    assert len({c.cell_id for c in seeded} | {plain[0].cell_id}) == 3  # distinct cells, the plain id untouched
    assert seeded[1].describe().endswith("seed 7")
    assert Cell.from_identity(seeded[1].identity()) == seeded[1]  # what a child process or a resume rebuilds
    assert Cell.from_identity(plain[0].identity()) == plain[0]
    assert [c.seed for c in expand(make(seeds=[0, 7]), cuda_available=False).select(parse_only("seed=7")).cells] \
        == [7]


def test_suite_without_seeds_keeps_its_manifest_form():
    assert "seeds" not in make().to_dict() and make(seeds=[1]).to_dict()["seeds"] == [1]


@pytest.mark.parametrize("seeds, match", [
    ([1, 1], r"seeds\[1\]: duplicate seed 1"),
    ([], r"seeds: expected a non-empty list"),
    (["a"], r"seeds\[0\]"),
])
def test_bad_seeds_name_the_key(seeds, match):
    with pytest.raises(SuiteError, match=match):
        make(seeds=seeds)


def test_the_cell_seed_reaches_the_metrics_and_splits_their_memo():
    """The metrics see the cell's seed (the suite's ``seed`` otherwise), and a metric whose result depends on the
    seed (``DEPENDS_ON`` naming it, as the accuracy metric does) is computed once per seed, not reused."""
    seen = []

    def fake(ctx):
        seen.append(ctx.seed)
        return {"fake_seed": ctx.seed}

    fake.DEPENDS_ON = ("attention", "config", "device", "seed")
    suite = make(seeds=[3, 5], axes={"resolution": [4, 6], "device": ["cpu"]})
    cells = expand(suite, cuda_available=False).cells
    runner = CellRunner([], {}, seed=11, functions=[("fake", fake)])
    results = [runner.measure(c) for c in cells]
    assert [r.status for r in results] == ["ok"] * 4
    assert [c.seed for c in cells] == [3, 3, 5, 5]
    assert [r.columns["fake_seed"] for r in results] == [3, 3, 5, 5]
    assert seen == [3, 5]  # the second grid of each seed reused its seed's result
    plain = expand(make(), cuda_available=False).cells[0]
    assert runner.context(plain)[0].seed == 11
