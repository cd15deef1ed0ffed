"""The ``accuracy`` metric in the engine: settings validation, the columns of one cell, a suite end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from accuracy_helpers import FAST_RECIPE
from attentions import models
from attnbench.metrics import accuracy
from attnbench.metrics.base import MetricContext

pytest.importorskip("timm", reason="the accuracy extra (timm, torchvision) is not installed")
pytest.importorskip("torchvision", reason="the accuracy extra (timm, torchvision) is not installed")

REPO = Path(__file__).resolve().parents[2]


def tiny_settings(work: Path, **extra) -> dict:
    return {"synthetic": True, "img_size": 32, "macro": "tiny", "synthetic_train_per_class": 4,
            "synthetic_val_per_class": 2, "work_dir": str(work), "log": False,
            "recipe": {**FAST_RECIPE, "epochs": 2}, **extra}


def context(attention: str, config: dict, settings: dict) -> MetricContext:
    return MetricContext(attention=attention, config=config, make_module=lambda: None, batch=1, height=56, width=56,
                         dtype=torch.float32, device=torch.device("cpu"), settings={"accuracy": settings}, seed=3)


@pytest.mark.parametrize("settings, match", [
    ({"epochs": 3}, r"settings.accuracy.epochs: unknown key \(allowed: model, macro, img_size, "),
    ({"img_size": "224"}, "settings.accuracy.img_size: expected an integer, got '224'"),
    ({"recipe": {"lr": None}}, "settings.accuracy.recipe.lr: expected a number, got None"),
    ({"nproc_per_node": 0}, "settings.accuracy.nproc_per_node: expected greater than or equal to 1, got 0"),
    ({"threads": 0}, r"threads=0 is not allowed: expected a positive int"),
])
def test_bad_settings_name_the_key(settings, match):
    with pytest.raises(ValueError, match=match):
        accuracy.validate_settings(settings)


def test_measure_returns_the_accuracy_columns(tmp_path):
    settings = tiny_settings(tmp_path)
    cols = accuracy.measure(context("bra", {"dim": 64, "num_heads": 2, "impl": "torch"}, settings))
    assert 0 <= cols["acc_top5"] <= 100 and cols["acc_top1"] <= cols["acc_top5"]
    assert cols["acc_epochs"] == 2 and len(cols["acc_loss_curve"]) == 2 and len(cols["acc_top1_curve"]) == 2
    assert cols["acc_top1_curve"][-1] == cols["acc_top1"]
    assert cols["acc_train_loss_final"] == cols["acc_loss_curve"][-1]
    assert cols["acc_model"] == "swap:tiny:bra" and cols["acc_dataset"] == "synthetic8@32"
    reference = models.create_model("swap", attention="bra", macro="tiny", img_size=32, num_classes=8)
    assert cols["acc_params"] == sum(p.numel() for p in reference.parameters())
    assert cols["acc_train_throughput_img_s"] > 0 and cols["model_latency_ms_median"] > 0
    assert cols["model_macs_fvcore"] > 1e6
    # the cell's config reached every slot (impl), its dim/num_heads did not (per stage)
    job_dirs = list((tmp_path / "jobs").iterdir())
    assert len(job_dirs) == 1 and job_dirs[0].name.startswith("bra-")
    ckpt = torch.load(job_dirs[0] / "checkpoint.pt", weights_only=False)
    assert ckpt["fingerprint"]["overrides"] == {"impl": "torch"} and ckpt["fingerprint"]["seed"] == 3
    # measuring the same cell again finds the finished job: same numbers, nothing retrained
    again = accuracy.measure(context("bra", {"dim": 64, "num_heads": 2, "impl": "torch"}, settings))
    assert again["acc_top1"] == cols["acc_top1"] and again["acc_loss_curve"] == cols["acc_loss_curve"]
    assert again["acc_top1_correct"] == cols["acc_top1_correct"]  # re-evaluated: the same images right
    _check_uncertainty_columns(cols, settings, ckpt)


def _check_uncertainty_columns(cols: dict, settings: dict, ckpt: dict) -> None:
    """acc_val_n, the Wilson intervals and the per-image bits, against the trained model scored image by image."""
    from attnbench.accuracy.job import build_datasets, build_model, make_job
    from attnbench.core.correct_bits import decode_bits
    from attnbench.core.stats import proportion_interval

    n = 8 * settings["synthetic_val_per_class"]
    assert cols["acc_val_n"] == n and cols["acc_seed"] == 3
    bits = decode_bits(cols["acc_top1_correct"], n)
    assert 100 * bits.sum() / n == pytest.approx(cols["acc_top1"])
    low, high = proportion_interval(int(bits.sum()), n)
    assert (cols["acc_top1_ci_low"], cols["acc_top1_ci_high"]) == pytest.approx((100 * low, 100 * high))
    assert cols["acc_top5_ci_low"] <= cols["acc_top5"] <= cols["acc_top5_ci_high"]
    job = make_job(settings, "bra", {"impl": "torch"}, "cpu", seed=3)
    model = build_model(job, num_classes=8)
    model.load_state_dict(ckpt["model"])
    model.eval()
    _, val, _, _ = build_datasets(job)
    with torch.no_grad():  # one image at a time, in the validation set's order
        expected = [int(model(val[i][0][None]).argmax()) == val[i][1] for i in range(len(val))]
    assert bits.tolist() == expected


def test_model_template_picks_a_preset_per_attention(tmp_path):
    settings = tiny_settings(tmp_path, model="debiformer_t_swap_{attention}_iso", img_size=224,
                             recipe={**FAST_RECIPE, "epochs": 1})
    from attnbench.accuracy.job import build_model, make_job

    job = make_job(settings, "agent", {}, "cpu")
    with torch.device("meta"):
        model = build_model(job, num_classes=8)
    assert job.model_name() == "debiformer_t_swap_agent_iso"
    assert [type(m).name for m in model.attention_slots().values()] == ["agent"] * 14
    assert model.head.out_features == 8


def test_accuracy_suite_end_to_end(tmp_path):
    """A two-attention suite through the runner: rows in results.jsonl carry the accuracy columns."""
    from attnbench.engine import runner

    suite = {"name": "acc_tiny", "attentions": [{"name": "mhsa"}, {"name": "agent"}],
             "axes": {"resolution": [8], "device": ["cpu"]}, "metrics": ["params", "accuracy"],
             "settings": {"accuracy": tiny_settings(tmp_path / "work", recipe={**FAST_RECIPE, "epochs": 1})}}
    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps(suite))  # JSON is YAML
    summary = runner.run(runner.plan(str(path), out=str(tmp_path / "run")), progress=False)
    assert summary.counts == {"ok": 2}
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["attention"] for r in rows] == ["mhsa", "agent"]
    for row in rows:
        assert row["status"] == "ok" and 0 <= row["acc_top1"] <= 100 and row["acc_epochs"] == 1
        assert row["acc_model"] == f"swap:tiny:{row['attention']}"
        assert row["acc_threads"] >= 1 and row["acc_threads_how"].startswith("auto")  # the default, recorded
        # the uncertainty columns reach results.jsonl: 8 classes x 2 validation images, bits and intervals
        assert row["acc_val_n"] == 16 and isinstance(row["acc_top1_correct"], str) and row["acc_seed"] == 0
        assert row["acc_top1_ci_low"] <= row["acc_top1"] <= row["acc_top1_ci_high"]
        assert "seed" not in row  # no seeds list: the identity (and cell_id) is what it always was


def test_seeds_train_one_job_per_seed(tmp_path):
    """``seeds: [0, 1]``: one training per seed, each row records its seed; the report folds them into mean ± sd."""
    from attnbench.engine import runner
    from attnbench.report.build import build_report

    suite = {"name": "acc_seeds", "attentions": [{"name": "mhsa"}], "seeds": [0, 1],
             "axes": {"resolution": [8], "device": ["cpu"]}, "metrics": ["accuracy"],
             "settings": {"accuracy": tiny_settings(tmp_path / "work", recipe={**FAST_RECIPE, "epochs": 1})}}
    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps(suite))
    summary = runner.run(runner.plan(str(path), out=str(tmp_path / "run")), progress=False)
    assert summary.counts == {"ok": 2}
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [(r["seed"], r["acc_seed"]) for r in rows] == [(0, 0), (1, 1)]
    assert rows[0]["cell_id"] != rows[1]["cell_id"] and rows[0]["acc_loss_curve"] != rows[1]["acc_loss_curve"]
    assert len(list((tmp_path / "work" / "jobs").iterdir())) == 2
    text = (build_report([tmp_path / "run"], tmp_path / "report", figures=False) / "summary.md").read_text()
    assert "2 seeds (" in text


@pytest.mark.parametrize("suite", ["accuracy_smoke.yaml", "accuracy_subset.yaml"])
def test_shipped_suites_load(suite):
    from attnbench.suite.load import load_suite

    loaded = load_suite(REPO / "suites" / suite)
    assert "accuracy" in loaded.metrics and len(loaded.attentions) == 5
    accuracy.validate_settings(loaded.to_dict()["settings"]["accuracy"])


@pytest.mark.slow  # two trainings and a report: about 100 s on the loaded 2-core machine
def test_accuracy_ablation_suite_end_to_end(tmp_path):
    """The shipped top-k ablation, shrunk (synthetic data, one epoch, top-k 4 and 1): one backbone per variant, the
    factor columns and the validation count in the rows, and the top-1 difference with its interval in the report."""
    import yaml

    from attnbench.engine import runner
    from attnbench.report.ablation import ablation
    from attnbench.report.build import make_report
    from attnbench.report.load import load_runs
    from attnbench.suite.load import load_suite

    shipped = load_suite(REPO / "suites" / "dbra_ablation_accuracy.yaml")
    assert shipped.labels() == ["dbra", "dbra-topk=1", "dbra-topk=2", "dbra-topk=16"]
    accuracy.validate_settings(shipped.to_dict()["settings"]["accuracy"])
    data = yaml.safe_load((REPO / "suites" / "dbra_ablation_accuracy.yaml").read_text())
    data["attentions"][0]["vary"] = {"topk": [1]}
    data["settings"]["accuracy"] = tiny_settings(tmp_path / "work", recipe={**FAST_RECIPE, "epochs": 1})
    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps(data))
    summary = runner.run(runner.plan(str(path), out=str(tmp_path / "run")), progress=False)
    assert summary.counts == {"ok": 2}
    rows = {r["label"]: r for r in map(json.loads, (tmp_path / "run" / "results.jsonl").read_text().splitlines())}
    assert rows["dbra"]["is_reference"] and rows["dbra-topk=1"]["factor"] == "topk"
    assert rows["dbra-topk=1"]["acc_val_n"] == 16  # 8 synthetic classes x 2
    frame = make_report(load_runs([tmp_path / "run"]))[1]
    table = ablation(frame).sections[0].tables[0]
    assert table.header[-1] == "top-1" and table.rows[0][0] == "1" and table.rows[1][0] == "4 (reference)"
    assert " pt [" in table.rows[0][-1]  # the difference in points with its interval
