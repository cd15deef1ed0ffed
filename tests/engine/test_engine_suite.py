"""Suite loading: every error names the file, the key path and what was expected; defaults; shipped suites."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import engine_fakes as fakes

from attnbench import metrics
from attnbench.suite.cells import expand
from attnbench.suite.schema import SuiteError
from attnbench.suite.load import load_suite, suite_from_dict

SUITES = Path(__file__).resolve().parents[2] / "suites"


def base(**overrides) -> dict:
    suite = {
        "name": "s",
        "attentions": [{"name": "mhsa"}, {"name": "bra", "config": {"topk": 4}}],
        "defaults": {"dim": 32, "num_heads": 2},
        "axes": {"resolution": [14], "device": ["cpu"]},
        "metrics": ["params"],
    }
    suite.update(overrides)
    return suite


def error_of(path) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    return str(info.value.message)


def test_broken_yaml_names_file_and_line(write_suite):
    path = write_suite("name: s\naxes:\n  resolution: [14, 28\n  batch: [1]\nmetrics: [params]\n")
    msg = error_of(path)
    assert msg.startswith(f"{path}: invalid YAML (line 4,")


def test_top_level_must_be_a_mapping(write_suite):
    assert "expected a mapping of suite keys" in error_of(write_suite("- just\n- a list\n"))


TEXT = """\
name: s
attentions:
  - name: mhsa
  - name: {second}
    config: {{topk: {topk}}}
axes:
  resolution: [14]
  batch: [1, {batch}]
  device: [cpu]
metrics: [params]
"""


def test_unknown_attention_gets_did_you_mean(write_suite):
    path = write_suite(TEXT.format(second="dbar", topk=4, batch=8))
    assert error_of(path) == (
        f"{path}: attentions[1].name: unknown attention 'dbar'; did you mean 'dbra'? (registered: "
        f"{', '.join(__import__('attentions').available())}; or give a dotted path 'package.module:Class') (line 4)"
    )


def test_unimportable_dotted_path_is_reported(write_suite):
    msg = error_of(write_suite(base(attentions=[{"name": "mhsa"}, {"name": "no_such_pkg.mod:Attn"}])))
    assert "attentions[1].name: cannot import module 'no_such_pkg.mod'" in msg


def test_wrong_types_name_the_key_path(write_suite):
    path = write_suite(TEXT.format(second="bra", topk="four", batch='"8"'))
    # pydantic's structural errors come first ...
    assert error_of(path) == f"{path}: axes.batch[1]: expected an integer, got '8' (line 8)"
    # ... and once the structure is right, the attention configs are checked
    path = write_suite(TEXT.format(second="bra", topk="four", batch=8))
    assert error_of(path) == f"{path}: attentions[1].config.topk: expected an integer, got 'four' (line 5)"


def test_unknown_keys_get_did_you_mean(write_suite):
    data = base(metric=["params"])
    data["attentions"][1]["config"] = {"topkk": 4}
    msg = error_of(write_suite(data))
    assert "(suite)" not in msg
    assert ": metric: unknown key; did you mean 'metrics'?" in msg
    data.pop("metric")
    msg = error_of(write_suite(data))
    assert "attentions[1].config.topkk: bra has no parameter 'topkk'; did you mean 'topk'?" in msg


@pytest.mark.parametrize("axis", ["resolution", "batch", "pass", "dtype", "device", "mode"])
def test_empty_axis_is_an_error(write_suite, axis):
    data = base()
    data["axes"][axis] = []
    assert f": axes.{axis}: expected a non-empty list, got []" in error_of(write_suite(data))


def test_bad_values_say_what_is_allowed(write_suite):
    data = base()
    data["axes"].update({"pass": ["fwd"], "resolution": [[14, 14, 14]], "batch": [0]})
    msg = error_of(write_suite(data))
    assert "axes.pass[0]: expected 'forward' or 'forward_backward', got 'fwd'" in msg
    assert "axes.resolution[0]: expected a positive integer N (an N×N grid), a pair [H, W] or 'HxW'" in msg
    assert "axes.batch[0]: expected greater than 0, got 0" in msg


def test_duplicate_labels_and_bad_baseline(write_suite):
    data = base(attentions=[{"name": "bra"}, {"name": "bra", "config": {"topk": 4}}], baseline="bar")
    msg = error_of(write_suite(data))
    assert "attentions[1].label: duplicate label 'bra' (also attentions[0])" in msg
    assert "baseline: expected the label of one of this suite's attentions (bra), got 'bar'; did you mean 'bra'?" in msg


def test_default_baseline_must_exist(write_suite):
    msg = error_of(write_suite(base(attentions=[{"name": "bra"}])))
    assert "baseline: expected the label of one of this suite's attentions (bra), got 'mhsa'" in msg


def test_zip_and_exclude_errors(write_suite):
    data = base(zip=[["resolution", "batch"]], exclude=[{"pass": "forwrd"}, {"colour": "red"}, {"attention": "dat"}])
    data["axes"].update({"resolution": [14, 28], "batch": [1]})
    msg = error_of(write_suite(data))
    assert "zip[0]: zipped axes must have the same number of values, got resolution: 2, batch: 1" in msg
    assert "exclude[0].pass: expected one of forward, forward_backward, got 'forwrd'" in msg
    assert "exclude[1].colour: unknown cell key" in msg
    assert "exclude[2].attention: 'dat' matches no attention of this suite" in msg


def test_unknown_metric_and_settings(write_suite, monkeypatch):
    timing = types.ModuleType("attnbench.metrics._fake_timing")
    timing.DEFAULTS = {"warmup": 3, "min_time_s": 0.5, "threads": None}
    monkeypatch.setitem(sys.modules, timing.__name__, timing)
    monkeypatch.setattr(metrics, "METRICS", {"params": "params", "timing": "_fake_timing"})
    data = base(metrics=["params", "flop"],
                settings={"timing": {"min_time": 1, "warmup": 2.5, "threads": None}, "memry": {}})
    msg = error_of(write_suite(data))
    assert "metrics[1]: unknown metric 'flop'" in msg
    assert "settings.timing.min_time: unknown key; did you mean 'min_time_s'? (allowed: warmup, min_time_s, threads)" in msg
    assert "settings.timing.warmup: expected an integer, got 2.5" in msg
    assert "settings.timing.threads" not in msg  # None is allowed where the default is None
    assert "settings.memry: not a metric" in msg


def test_metric_validate_settings_hook(write_suite, monkeypatch):
    def validate_settings(given):
        if given.get("n", 1) < 1:
            raise ValueError("n must be >= 1")

    module = types.ModuleType("attnbench.metrics._fake_hooked")
    module.validate_settings = validate_settings
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(metrics, "METRICS", {"params": "params", "hooked": "_fake_hooked"})
    msg = error_of(write_suite(base(metrics=["params", "hooked"], settings={"hooked": {"n": 0}})))
    assert ": settings.hooked: n must be >= 1" in msg


def test_all_errors_reported_at_once(write_suite):
    data = base(baseline="nope", exclude=[{"batch": "one"}])
    msg = error_of(write_suite(data))
    assert len(msg.splitlines()) == 2


def test_defaults_go_to_attentions_that_accept_them(write_suite):
    data = base(defaults={"dim": 32, "num_heads": 2, "auto_pad": True})
    data["attentions"].append({"name": "dbra", "label": "dbra-nopad", "config": {"auto_pad": False}})
    suite = load_suite(write_suite(data))
    configs = {e.label: e.config for e in suite.attentions}
    assert configs == {
        "mhsa": {"dim": 32, "num_heads": 2},                                  # mhsa takes no auto_pad
        "bra": {"dim": 32, "num_heads": 2, "auto_pad": True, "topk": 4},
        "dbra-nopad": {"dim": 32, "num_heads": 2, "auto_pad": False},         # the entry wins
    }


def test_a_default_no_attention_takes_is_an_error(write_suite):
    msg = error_of(write_suite(base(defaults={"dim": 32, "num_heads": 2, "n_wins": 7})))
    assert "defaults.n_wins: no attention of this suite takes this parameter" in msg


def test_dotted_attention_without_config_is_checked_by_signature(write_suite):
    data = base(attentions=[{"name": "mhsa"}, {"name": fakes.dotted("Tiny"), "config": {"scale": "big"}}])
    msg = error_of(write_suite(data))
    assert "attentions[1].config.scale: expected a number, got 'big'" in msg


def test_resolved_suite_round_trips(write_suite):
    """--resume rebuilds the suite from the manifest's dict: it must expand to the very same cells."""
    suite = load_suite(write_suite(base(exclude=[{"attention": "bra", "resolution": 28}],
                                        axes={"resolution": [14, [28, 28]], "device": ["cpu"]})))
    again = suite_from_dict(suite.to_dict())
    ids = [c.cell_id for c in expand(suite, cuda_available=False).cells]
    assert ids == [c.cell_id for c in expand(again, cuda_available=False).cells]
    assert len(ids) == 3


def test_shipped_suites_load_and_cover_what_they_promise():
    sweep = load_suite(SUITES / "resolution_sweep.yaml")
    assert [e.name for e in sweep.attentions] == ["mhsa", "bra", "dbra", "dat", "agent"]
    assert all(e.config["dim"] == 64 and e.config["num_heads"] == 2 for e in sweep.attentions)
    grids = sweep.axes.resolution
    assert len(grids) >= 5 and min(grids) == (14, 14) and max(grids) == (112, 112)
    assert sweep.axes.batch == [1, 8] and sweep.axes.pass_ == ["forward", "forward_backward"]
    assert sweep.axes.device == ["cuda_if_available"]
    assert sweep.metrics == ["params", "flops", "latency", "memory"]
    gpu = expand(sweep, cuda_available=True)
    assert len(gpu.cells) == 5 * len(grids) * 2 * 2 and not gpu.skipped  # the CPU-only exclude spares the GPU

    ablation = load_suite(SUITES / "dbra_ablation.yaml")
    assert {e.name for e in ablation.attentions} == {"dbra"} and ablation.baseline == "dbra"
    assert ablation.attentions[0].config == {"dim": 64, "num_heads": 2, "n_win": 7, "topk": 4, "n_groups": 1,
                                             "offset_stride": 8, "offset_channels": 1, "lce_kernel": 5,
                                             "auto_pad": True}  # the stage-1 defaults, written out: the reference
    assert len(ablation.entries) == 11
    assert "latency" not in ablation.settings  # the suite-wide latency rules
    assert not expand(ablation, cuda_available=False).skipped

    smoke = load_suite(SUITES / "smoke.yaml")
    assert len(expand(smoke, cuda_available=False).cells) == 10
