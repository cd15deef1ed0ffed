"""Accuracy jobs build every model for ``settings.accuracy.img_size``: presets (``_iso`` included) as well as
``swap``, so a 32-px run holds 32-px slot configs for all five attentions."""
from __future__ import annotations

import pytest
import torch

from accuracy_helpers import FAST_RECIPE
from attentions import models
from attnbench.accuracy.job import build_model, make_job
from attnbench.metrics import accuracy
from attnbench.metrics.base import MetricContext

pytest.importorskip("timm", reason="the accuracy extra (timm, torchvision) is not installed")

ISO = "debiformer_t_swap_{attention}_iso"


def iso_settings(work, **extra) -> dict:
    return {"synthetic": True, "img_size": 32, "model": ISO, "synthetic_train_per_class": 2,
            "synthetic_val_per_class": 1, "work_dir": str(work), "log": False, "threads": 1,
            "recipe": {**FAST_RECIPE, "epochs": 1, "batch_size": 8}, **extra}


def _slots(model) -> dict:
    return {p: m.config for p, m in model.attention_slots().items()}


@pytest.mark.parametrize("attention", models.SWAP_ATTENTIONS)
@pytest.mark.parametrize("size", [32, 224])
def test_job_builds_the_preset_for_its_img_size(attention, size):
    job = make_job({"model": ISO, "img_size": size}, attention, {}, "cpu")
    with torch.device("meta"):
        built = build_model(job, num_classes=8)
        reference = models.create_model(ISO.format(attention=attention), img_size=size, num_classes=8)
    assert _slots(built) == _slots(reference)
    assert {k: v.shape for k, v in built.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}
    stage1 = built.stages[0][0].attn1.config
    for key, at32, at224 in (("n_win", 4, 7), ("rpe_size", 8, 56), ("window_size", 8, 56)):
        if hasattr(stage1, key):  # bra/dbra regions, dbra/dat tables, agent window: the 8×8 or 56×56 grid
            assert getattr(stage1, key) == (at32 if size == 32 else at224), key


def _measure(attention: str, settings: dict) -> dict:
    ctx = MetricContext(attention=attention, config={}, make_module=lambda: None, batch=1, height=8, width=8,
                        dtype=torch.float32, device=torch.device("cpu"), settings={"accuracy": settings}, seed=0)
    return accuracy.measure(ctx)


@pytest.mark.parametrize("attention", [
    "bra",  # the one whose 224-px config (7 regions) cannot split the 8×8 grid of a 32-px image
    *[pytest.param(a, marks=pytest.mark.slow) for a in models.SWAP_ATTENTIONS if a != "bra"],
])
def test_iso_accuracy_run_at_32px(tmp_path, attention):
    cols = _measure(attention, iso_settings(tmp_path))
    assert cols["acc_model"] == f"debiformer_t_swap_{attention}_iso" and cols["acc_dataset"] == "synthetic8@32"
    assert 0 <= cols["acc_top1"] <= 100 and cols["acc_epochs"] == 1 and cols["model_latency_ms_median"] > 0
    reference = models.create_model(f"debiformer_t_swap_{attention}_iso", img_size=32, num_classes=8)
    assert cols["acc_params"] == sum(p.numel() for p in reference.parameters())


def test_model_kwargs_cannot_set_img_size():
    with pytest.raises(ValueError, match=r"settings\.accuracy\.model_kwargs\.img_size is not allowed: set "
                                         r"settings\.accuracy\.img_size"):
        accuracy.validate_settings({"model_kwargs": {"img_size": 64}})


def test_a_model_without_img_size_is_a_clear_error(monkeypatch):
    def entrypoint(num_classes: int = 1000, attn_overrides=None) -> torch.nn.Module:  # written without img_size
        return torch.nn.Linear(4, num_classes)

    monkeypatch.setattr(models, "create_model", lambda name, **kwargs: entrypoint(**kwargs))
    job = make_job({"model": "my_net", "img_size": 32}, "mhsa", {}, "cpu")
    with pytest.raises(ValueError, match=r"model 'my_net' does not take img_size"):
        build_model(job, num_classes=8)
