"""Factors in the suite format: ``vary`` / ``vary_product`` expand into labelled variants whose rows carry the
factor columns, each variant timed against its reference; the errors name the entry and the field."""
from __future__ import annotations

import pytest

import engine_fakes as fakes

from attnbench.engine import runner
from attnbench.suite.cells import Cell, expand
from attnbench.core.results import read_rows
from attnbench.suite.schema import SuiteError
from attnbench.suite.load import load_suite, suite_from_dict

FAST = {"warmup": 1, "min_time_s": 0.0, "min_repeats": 6, "max_repeats": 6, "min_block_s": 0.0}


def test_the_shipped_ablation_expands_into_labelled_variants_with_stable_ids():
    suite = load_suite("suites/dbra_ablation.yaml")
    assert suite.labels() == [
        "dbra", "dbra-topk=1", "dbra-topk=2", "dbra-topk=8", "dbra-topk=16", "dbra-n_win=8",
        "dbra-offset_channels=2", "dbra-lce_kernel=0", "dbra-n_groups=1+offset_stride=4",
        "dbra-n_groups=2+offset_stride=8", "dbra-n_groups=2+offset_stride=4"]  # the reference's values are left out
    cells = expand(suite, cuda_available=False).cells
    assert len(cells) == 44
    by_label = {(c.label, c.height, c.pass_): c for c in cells}
    ref, top8 = by_label[("dbra", 56, "forward")], by_label[("dbra-topk=8", 56, "forward")]
    # literal ids: a change to the expansion (labels, configs, order of keys) shows up here
    assert ref.cell_id == "199272f7a700" and top8.cell_id == "bb38dd8603ae"
    assert by_label[("dbra-n_groups=2+offset_stride=4", 112, "forward_backward")].cell_id == "3534a659ae03"
    assert top8.config == {**ref.config, "topk": 8}
    assert ref.factor == {"factor": None, "factor_value": None, "is_reference": True, "factor_reference": "dbra"}
    assert top8.factor == {"factor": "topk", "factor_value": 8, "is_reference": False, "factor_reference": "dbra"}
    product = by_label[("dbra-n_groups=2+offset_stride=4", 56, "forward")]
    assert product.factor["factor"] == "n_groups+offset_stride"
    assert product.factor["factor_value"] == {"n_groups": 2, "offset_stride": 4}
    assert (product.config["n_groups"], product.config["offset_stride"]) == (2, 4)


def test_hand_written_variant_is_the_same_cell_and_vary_round_trips_through_the_manifest():
    ref = {"n_win": 7, "topk": 4}
    base = {"name": "s", "defaults": {"dim": 64, "num_heads": 2}, "axes": {"resolution": [14], "device": ["cpu"]},
            "metrics": ["params"]}
    by_vary = suite_from_dict({**base, "attentions": [{"name": "dbra", "config": ref, "vary": {"topk": [2]}}]})
    by_hand = suite_from_dict({**base, "baseline": "dbra", "attentions": [
        {"name": "dbra", "config": ref}, {"name": "dbra", "label": "dbra-topk=2", "config": {**ref, "topk": 2}}]})
    ids = [[c.cell_id for c in expand(s, cuda_available=False).cells] for s in (by_vary, by_hand)]
    assert ids[0] == ids[1]  # the factor columns are not identity: a hand-written variant is the same cell
    assert expand(by_hand, cuda_available=False).cells[1].factor is None  # and carries no factor columns
    assert by_vary.baseline == "dbra"  # an ablation without a baseline key: its reference
    stored = by_vary.to_dict()
    assert stored["attentions"][0]["vary"] == {"topk": [2]} and "vary_product" not in stored["attentions"][0]
    assert suite_from_dict(stored).labels() == ["dbra", "dbra-topk=2"]
    assert "vary" not in by_hand.to_dict()["attentions"][0]  # a suite without factors stores what it always did


def test_a_batch_job_keeps_the_factor_columns():
    suite = suite_from_dict({"name": "s", "attentions": [{"name": "dbra", "config": {"topk": 4},
                                                          "vary": {"topk": [1]}}],
                             "axes": {"resolution": [14], "device": ["cpu"]}, "metrics": ["params"]})
    cell = expand(suite, cuda_available=False).cells[-1]
    again = Cell.from_identity(cell.record())
    assert again.factor == cell.factor and again.cell_id == cell.cell_id


@pytest.mark.parametrize("entry, expected", [
    ({"vary": {"topk": []}}, "attentions[0].vary.topk: expected a non-empty list, got []"),
    ({"vary": {"topk": [1, 1]}}, "attentions[0].vary.topk[1]: duplicate value 1"),
    ({"vary": {"topc": [1]}}, "attentions[0].vary.topc: dbra has no parameter 'topc'; did you mean 'topk'?"),
    ({"vary": {"topk": ["two"]}}, "attentions[0].vary.topk[0]: expected an integer, got 'two'"),
    ({"vary": {"topk": [[1, 2]]}}, "attentions[0].vary.topk[0]: expected a number, a string, true/false or null"),
    ({"vary_product": {"topk": [1, 2]}}, "attentions[0].vary_product: expected two or more keys to combine"),
    ({"vary": {"topk": [1]}, "vary_product": {"topk": [2], "n_win": [2]}},
     "attentions[0].vary_product.topk: 'topk' is also under 'vary'"),
    ({"vary": {"topk": "1, 2"}}, "attentions[0].vary.topk: expected a list, got '1, 2'"),
])
def test_factor_errors_name_the_entry_and_the_field(write_suite, entry, expected):
    path = write_suite({"name": "s", "attentions": [{"name": "dbra", **entry}],
                        "axes": {"resolution": [14]}, "metrics": ["params"]})
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert f"{path}: {expected}" in str(info.value)


def test_rows_carry_the_factor_columns_and_variants_are_timed_against_their_reference(write_suite, tmp_path):
    path = write_suite({
        "name": "planted",
        "attentions": [{"name": fakes.dotted("Tiny"), "label": "other"},
                       {"name": fakes.dotted("Doubling"), "label": "toy", "config": {"work": 1, "inert": 1},
                        "vary": {"work": [2], "inert": [1, 2]}}],
        "axes": {"resolution": [8], "device": ["cpu"]},
        "metrics": ["params", "flops", "latency"],
        "baseline": "other",
        "settings": {"latency": FAST},
    })
    p = runner.plan(str(path), out=str(tmp_path / "run"), cuda_available=False)
    runner.run(p, isolate=False, progress=False, argv=["attnbench", "run", str(path)])
    rows = {r["label"]: r for r in read_rows(tmp_path / "run")}
    assert list(rows) == ["other", "toy", "toy-work=2", "toy-inert=2"]
    assert {k: rows["other"][k] for k in ("factor", "factor_value", "is_reference", "factor_reference")} == \
        {"factor": None, "factor_value": None, "is_reference": False, "factor_reference": None}
    assert rows["toy"]["is_reference"] is True and rows["toy"]["factor_reference"] == "toy"
    assert (rows["toy-work=2"]["factor"], rows["toy-work=2"]["factor_value"]) == ("work", 2)
    assert rows["toy"]["paired_baseline"] == "other"         # the reference is timed against the suite baseline
    assert rows["toy-work=2"]["paired_baseline"] == "toy"    # its variants against the reference
    assert rows["toy-inert=2"]["paired_baseline"] == "toy"
    assert rows["toy-work=2"]["macs_analytic"] == 2 * rows["toy"]["macs_analytic"]
    assert rows["toy-inert=2"]["params"] == rows["toy"]["params"]


def test_a_factor_error_gives_the_line_of_the_value(write_suite):
    path = write_suite("name: s\nattentions:\n  - name: dbra\n    config: {topk: 4}\n"
                       "    vary:\n      topk: [1, 2]\n      n_win: [7, 'eight']\naxes: {resolution: [14]}\n"
                       "metrics: [params]\n")
    with pytest.raises(SuiteError, match=r"attentions\[0\]\.vary\.n_win\[1\]: expected an integer, got 'eight' "
                       r"\(line 7\)"):
        load_suite(path)
