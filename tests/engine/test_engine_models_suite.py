"""Model suites (``models:``): loading and its errors, per-device batches, model cells and their identity, the
probe, the output contract, and the metrics on real backbones -- DeBiFormer-T's params and fvcore MACs equal to
the figures pinned in tests/models (and to fvcore's count without attnbench's handles, plain_fvcore_macs)."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torch import nn

from attnbench.engine import execute, runner
from attnbench.suite.cells import Cell, expand
from attnbench.core.errors import UserError
from attnbench.engine.execute import CellRunner, ContractError, check_contract
from attnbench.metrics.base import MetricContext
from attnbench.core.results import read_rows
from attnbench.suite.schema import SuiteError
from attnbench.suite.load import load_suite, suite_from_dict

#: a CPU-cheap real backbone: the tiny macro design, MHSA in every slot, 64-px images (grids 16, 8, 4, 2)
TINY = {"attention": "mhsa", "macro": "tiny", "img_size": 64, "num_classes": 8}


def models_suite(**over) -> dict:
    data = {"name": "m", "models": [{"name": "debiformer_t"}, {"name": "biformer_t", "label": "bt"}],
            "axes": {"resolution": [224], "batch": [1]}, "metrics": ["params"]}
    data.update(over)
    return data


def error_of(path) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    return str(info.value)


# -- loading ---------------------------------------------------------------------------------------------------------

def test_models_suite_loads_with_labels_defaults_and_first_model_as_baseline():
    suite = suite_from_dict(models_suite(defaults={"num_classes": 10}))
    assert suite.kind == "model" and suite.entries_key == "models" and suite.attentions is None
    assert suite.labels() == ["debiformer_t", "bt"] and suite.baseline == "debiformer_t"
    assert [e.config for e in suite.models] == [{"num_classes": 10}, {"num_classes": 10}]
    data = suite.to_dict()
    assert "attentions" not in data and data["models"][1] == {"name": "biformer_t", "label": "bt",
                                                              "config": {"num_classes": 10}}
    assert suite_from_dict(data) == suite  # what --resume reloads from the manifest


def test_attention_suite_dict_has_no_models_key():
    data = suite_from_dict({"name": "a", "attentions": [{"name": "mhsa"}], "axes": {"resolution": [14]},
                            "metrics": ["params"]}).to_dict()
    assert "models" not in data and data["baseline"] == "mhsa"


BAD = [
    ("models:\n  - name: debiformer_t\n  - name: debiformr_s\n",
     "models[1].name: unknown model 'debiformr_s'; did you mean 'debiformer_s'? (registered: biformer_b, ", 4),
    ("models:\n  - name: debiformer_t\n    config: {num_clases: 10}\n",
     "models[0].config.num_clases: debiformer_t takes no parameter 'num_clases'; did you mean 'num_classes'?", 4),
    ("models:\n  - name: debiformer_t\nattentions:\n  - name: mhsa\n",
     "models: a suite lists either 'attentions' or 'models', not both", 2),
    ("description: no entries\n", "attentions: required key is missing: a suite lists the attentions", 1),
    ("models:\n  - name: debiformer_t\n  - name: biformer_t\n    label: debiformer_t\n",
     "models[1].label: duplicate label 'debiformer_t' (also models[0])", 5),
    ("models:\n  - name: debiformer_t\nbaseline: debiformer\n",
     "baseline: expected the label of one of this suite's models (debiformer_t), got 'debiformer'; did you mean "
     "'debiformer_t'?", 4),
    ("models:\n  - name: debiformer_t\nexclude:\n  - {model: debiformer_x}\n",
     "exclude[0].model: 'debiformer_x' matches no model of this suite; did you mean 'debiformer_t'?", 5),
]


@pytest.mark.parametrize("text, message, line", BAD, ids=["unknown-model", "config-key", "both", "neither",
                                                          "duplicate-label", "baseline", "exclude-model"])
def test_models_suite_errors_name_file_key_and_line(write_suite, text, message, line):
    path = write_suite("name: m\n" + text + "axes:\n  resolution: [224]\nmetrics: [params]\n")
    error = error_of(path)
    assert error.startswith(f"{path}: {message}"), error
    assert error.endswith(f"(line {line})")


def test_per_device_batch_errors(write_suite):
    path = write_suite("name: m\nmodels:\n  - name: debiformer_t\naxes:\n  resolution: [224]\n"
                       "  batch: {cpu: [8, 0], gpu: [64]}\nmetrics: [params]\n")
    lines = error_of(path).splitlines()
    assert f"{path}: axes.batch.cpu[1]: expected greater than 0, got 0 (line 6)" in lines
    assert f"{path}: axes.batch.cuda: required key is missing (line 6)" in lines
    assert f"{path}: axes.batch.gpu: unknown key; did you mean 'cpu'? (allowed: cpu, cuda) (line 6)" in lines


def test_attention_suite_list_batch_errors_keep_their_key_path(write_suite):
    path = write_suite("name: a\nattentions:\n  - name: mhsa\naxes:\n  resolution: [14]\n  batch: [1, '8']\n"
                       "metrics: [params]\n")
    assert error_of(path) == f"{path}: axes.batch[1]: expected an integer, got '8' (line 6)"


# -- expansion and cells ---------------------------------------------------------------------------------------------

def _shapes(suite, cuda: bool) -> list[tuple]:
    return [(c.batch, c.pass_, c.device) for c in expand(suite, cuda_available=cuda).cells]


def test_per_device_batch_zips_position_by_position():
    suite = suite_from_dict(models_suite(models=[{"name": "debiformer_t"}], zip=[["batch", "pass"]], axes={
        "resolution": [224], "batch": {"cpu": [8, 2], "cuda": [64, 64]}, "pass": ["forward", "forward_backward"]}))
    assert _shapes(suite, cuda=False) == [(8, "forward", "cpu"), (2, "forward_backward", "cpu")]
    assert _shapes(suite, cuda=True) == [(64, "forward", "cuda"), (64, "forward_backward", "cuda")]


def test_per_device_batch_without_zip_is_a_product_and_a_short_list_has_fewer_cells():
    suite = suite_from_dict(models_suite(models=[{"name": "debiformer_t"}], axes={
        "resolution": [224], "batch": {"cpu": [1, 2], "cuda": [64]}, "pass": ["forward", "forward_backward"]}))
    assert _shapes(suite, cuda=False) == [(1, "forward", "cpu"), (1, "forward_backward", "cpu"),
                                          (2, "forward", "cpu"), (2, "forward_backward", "cpu")]
    assert _shapes(suite, cuda=True) == [(64, "forward", "cuda"), (64, "forward_backward", "cuda")]


def test_model_cell_identity_holds_kind_and_attention_cells_keep_their_ids():
    model = expand(suite_from_dict(models_suite()), cuda_available=False).cells[0]
    assert model.kind == "model" and model.identity()["kind"] == "model" and model.attention == "debiformer_t"
    assert Cell.from_identity(json.loads(json.dumps(model.identity()))) == model
    attn = expand(suite_from_dict({"name": "a", "attentions": [{"name": "mhsa"}], "axes": {"resolution": [14]},
                                   "metrics": ["params"]}), cuda_available=False).cells[0]
    assert "kind" not in attn.identity() and Cell.from_identity(attn.identity()).kind == "attention"
    # the id of an attention cell is the hash of the columns it always had
    old = {"suite": "a", "attention": "mhsa", "label": "mhsa", "config": {}, "height": 14, "width": 14,
           "tokens": 196, "batch": 1, "dtype": "float32", "device": "cpu", "pass": "forward", "mode": "eager"}
    text = json.dumps(old, sort_keys=True, separators=(",", ":"))
    assert attn.cell_id == hashlib.sha1(text.encode()).hexdigest()[:12]


def test_exclude_and_only_match_the_model_key():
    suite = suite_from_dict(models_suite(exclude=[{"model": "bi*"}]))
    cells = expand(suite, cuda_available=False)
    assert [c.label for c in cells.cells] == ["debiformer_t"] and cells.excluded == 1


def test_image_side_not_a_multiple_of_32_is_a_plan_error(write_suite, tmp_path):
    path = write_suite(models_suite(models=[{"name": "debiformer_t"}], axes={"resolution": [224, 200]}))
    with pytest.raises(UserError) as info:
        runner.plan(str(path), out=str(tmp_path / "run"), cuda_available=False)
    assert "cell debiformer_t 200x200 b1 float32 cpu fwd eager" in str(info.value)
    assert "a backbone takes sides that are multiples of 32" in str(info.value)
    assert "fix the resolution" in str(info.value)


# -- the output contract ---------------------------------------------------------------------------------------------

def _ctx(**over) -> MetricContext:
    args = dict(attention="m", config={"num_classes": 10}, make_module=lambda: None, batch=2, height=32, width=32,
                dtype=torch.float32, device=torch.device("cpu"), kind="model")
    args.update(over)
    return MetricContext(**args)


def test_model_contract_expects_batch_by_num_classes_logits():
    ctx = _ctx()
    x = ctx.make_input(False)
    assert tuple(x.shape) == (2, 3, 32, 32)
    check_contract(ctx, x, torch.zeros(2, 10))
    with pytest.raises(ContractError) as info:
        check_contract(ctx, x, torch.zeros(2, 9))
    assert str(info.value) == ("output breaks the model contract: shape (2, 9) (expected (2, 10) = "
                               "(B, num_classes) logits)")
    with pytest.raises(ContractError, match=r"shape \(2, 3, 32, 32\) \(expected \(2, 10\)"):
        check_contract(ctx, x, x)  # a token map / image out is not logits
    with pytest.raises(ContractError, match=r"dtype float16"):
        check_contract(ctx, x, torch.zeros(2, 10, dtype=torch.float16))


class _Features(nn.Module):
    """A 'backbone' that forgets its head: (B, 3, H, W) -> (B, 4, H/2, W/2)."""

    num_classes = 8

    def __init__(self, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 2, stride=2)

    def forward(self, x):
        return self.conv(x)


def test_a_model_cell_whose_output_is_not_logits_fails_at_the_gate(monkeypatch):
    monkeypatch.setattr(execute, "build_module", lambda *args, **kwargs: _Features())
    cell = Cell("m", "swap", "x", dict(TINY), 64, 64, 2, "float32", "cpu", "forward", "eager", kind="model")
    outcome = CellRunner(["params"], {}).measure(cell)
    assert outcome.status == "failed" and outcome.error_stage == "correctness"
    assert outcome.error == ("ContractError: output breaks the model contract: shape (2, 4, 32, 32) "
                             "(expected (2, 8) = (B, num_classes) logits)")


# -- metrics on real backbones ---------------------------------------------------------------------------------------

def test_debiformer_t_params_and_macs_equal_the_pinned_figures(plain_fvcore_macs):
    from attentions.models import create_model

    cell = Cell("m", "debiformer_t", "DeBiFormer-T", {}, 224, 224, 1, "float32", "cpu", "forward", "eager",
                kind="model")
    outcome = CellRunner(["params", "flops", "published"], {}).measure(cell)
    assert outcome.status == "ok", outcome.error
    row = outcome.columns
    torch.manual_seed(0)
    reference = create_model("debiformer_t")
    assert row["params"] == sum(p.numel() for p in reference.parameters())
    assert row["macs_fvcore"] == plain_fvcore_macs("debiformer_t")  # our handles add nothing on this model
    assert round(row["params"] / 1e6, 3) == 21.496 and round(row["macs_fvcore"] / 1e9, 4) == 2.6536
    assert "macs_analytic" not in row and row["flops_uncounted_ops"] == ""
    assert (row["paper_name"], row["paper_params_m"], row["paper_gflops"]) == ("DeBiFormer-T", "21.4", "2.6")


def test_settings_threads_is_checked(write_suite):
    path = write_suite(models_suite(settings={"threads": 0}))
    assert "settings.threads: expected greater than or equal to 1, got 0" in error_of(path)


def test_tiny_model_suite_runs_every_metric_and_reports_a_paper_table(write_suite, tmp_path):
    from attnbench.report import build_report

    path = write_suite(models_suite(
        models=[{"name": "swap", "label": "tiny-mhsa", "config": TINY}],
        axes={"resolution": [64], "batch": {"cpu": [3, 2], "cuda": [3, 2]}, "pass": ["forward", "forward_backward"]},
        zip=[["batch", "pass"]], metrics=["params", "flops", "latency", "memory", "published"],
        settings={"threads": 1, "latency": {"warmup": 1, "min_time_s": 0.0, "min_repeats": 5, "paired": False,
                                             "min_epochs": 2, "max_time_s": 1.0}}))  # the columns, not a precise time
    p = runner.plan(str(path), out=str(tmp_path / "run"), cuda_available=False)
    summary = runner.run(p, progress=False, argv=["attnbench", "run", str(path)], isolate=False)
    assert summary.counts == {"ok": 2}
    fwd, train = read_rows(tmp_path / "run")
    assert (fwd["kind"], fwd["batch"], fwd["pass"], train["batch"]) == ("model", 3, "forward", 2)
    for row in (fwd, train):
        assert row["threads"] == 1 and row["mem_peak_bytes"] > 0 and row["macs_fvcore"] > 0
        assert row["throughput_img_s"] == pytest.approx(row["batch"] / (row["latency_ms_median"] / 1e3))
        assert row["throughput_img_s_ci_low"] == pytest.approx(row["batch"] / (row["latency_ms_ci_high"] / 1e3))
        assert row["throughput_img_s_ci_high"] == pytest.approx(row["batch"] / (row["latency_ms_ci_low"] / 1e3))
        assert not any(k.startswith("paper_") for k in row)  # nothing is published for a swap model
    out = build_report([tmp_path / "run"], tmp_path / "report", figures=False)
    text = (out / "summary.md").read_text(encoding="utf-8")
    assert "## Paper table" in text and "No model of this run has published figures." in text
    assert "| tiny-mhsa |" in text and "(b3, cpu, 1 thread)" in text and "(b2, cpu)" in text


def test_shipped_models_suite_is_sized_per_device():
    from pathlib import Path

    suite = load_suite(Path(__file__).resolve().parents[2] / "suites" / "models.yaml")
    names = [e.name for e in suite.models]
    assert names[:6] == ["debiformer_t", "debiformer_s", "debiformer_b", "biformer_t", "biformer_s", "biformer_b"]
    assert names[6:] == [f"debiformer_t_swap_{a}" for a in ("mhsa", "bra", "dat", "agent", "dbra")]
    assert "published" in suite.metrics and suite.settings["latency"]["paired"] is False
    assert set(_shapes(suite, cuda=False)) == {(8, "forward", "cpu"), (2, "forward_backward", "cpu")}
    assert set(_shapes(suite, cuda=True)) == {(64, "forward", "cuda"), (64, "forward_backward", "cuda")}
    assert {c.height for c in expand(suite, cuda_available=False).cells} == {224}
