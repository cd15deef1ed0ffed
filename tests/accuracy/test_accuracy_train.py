"""The training loop: a step learns, resume equals an uninterrupted run, checkpoints refuse other jobs."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from accuracy_helpers import FAST_RECIPE
from attentions import models
from attnbench.accuracy.data import ImageFolderSubset, build_transform
from attnbench.accuracy.recipe import Recipe, make_criterion, scaled_lr
from attnbench.accuracy.train import CHECKPOINT, CheckpointMismatch, fit

pytest.importorskip("timm", reason="the accuracy extra (timm, torchvision) is not installed")
pytest.importorskip("torchvision", reason="the accuracy extra (timm, torchvision) is not installed")


def tiny_model(attention: str = "mhsa", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.create_model("swap", attention=attention, macro="tiny", img_size=32, num_classes=8)


def datasets(root, augment: str = "none", cap=None):
    train = ImageFolderSubset(root, "train", None, cap, build_transform(True, 32, augment))
    val = ImageFolderSubset(root, "val", None, None, build_transform(False, 32, augment))
    return train, val


def test_one_step_changes_weights_and_lowers_the_loss(tiny_tree, tmp_path):
    """A 16-image training set and batch 16: one epoch is one optimizer step on that fixed batch."""
    train, val = datasets(tiny_tree, cap=2)
    recipe = Recipe.from_dict({**FAST_RECIPE, "epochs": 1, "batch_size": 16})
    x = torch.stack([train[i][0] for i in range(len(train))])
    y = torch.tensor(train.targets)
    model = tiny_model()
    criterion = make_criterion(recipe)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    with torch.no_grad():
        loss_before = float(criterion(model(x), y))
    result = fit(model, train, val, recipe, tmp_path, torch.device("cpu"), num_classes=8)
    model.train()
    with torch.no_grad():
        loss_after = float(criterion(model(x), y))
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert len(changed) > 0.9 * len(before)
    assert loss_after < loss_before
    # the loop's own loss of that step is the loss of the fixed batch under the starting weights
    assert result["history"][0]["train_loss"] == pytest.approx(loss_before, rel=1e-4)
    assert result["history"][0]["lr"] == pytest.approx(scaled_lr(recipe, 1))


def test_resume_continues_exactly(tiny_tree, tmp_path):
    """Augmentation, mixup/cutmix and drop-path draw random numbers: reseeding per epoch makes epoch 2 of a resumed
    run identical to epoch 2 of an uninterrupted one."""
    train, val = datasets(tiny_tree, augment="imagenet", cap=4)
    recipe = Recipe.from_dict({**FAST_RECIPE, "epochs": 3, "batch_size": 8, "mixup": 0.8, "cutmix": 1.0,
                               "augment": "imagenet", "randaugment": "rand-m9-mstd0.5-inc1", "reprob": 0.25,
                               "warmup_epochs": 1.0})
    cpu = torch.device("cpu")
    whole_model = tiny_model("dat")
    whole_model.stages[2][0].drop_path.p = 0.2
    whole = fit(whole_model, train, val, recipe, tmp_path / "whole", cpu, num_classes=8)

    crashed = tiny_model("dat")
    crashed.stages[2][0].drop_path.p = 0.2
    first = fit(crashed, train, val, recipe, tmp_path / "crash", cpu, num_classes=8, stop_after_epoch=0)
    assert first["epochs"] == 1 and (tmp_path / "crash" / CHECKPOINT).exists()
    fresh = tiny_model("dat", seed=123)  # the weights come from the checkpoint, not from this init
    fresh.stages[2][0].drop_path.p = 0.2
    resumed = fit(fresh, train, val, recipe, tmp_path / "crash", cpu, num_classes=8)

    assert resumed["resumed_from"] == 1 and resumed["epochs"] == 3
    for a, b in zip(whole["history"], resumed["history"]):
        assert a["train_loss"] == b["train_loss"] and a["top1"] == b["top1"]
    for key, value in whole_model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    assert resumed["top1"] == whole["top1"]


def test_finished_job_is_not_retrained(tiny_tree, tmp_path):
    train, val = datasets(tiny_tree, cap=2)
    recipe = Recipe.from_dict({**FAST_RECIPE, "epochs": 1})
    done = fit(tiny_model(), train, val, recipe, tmp_path, torch.device("cpu"), num_classes=8)
    again = fit(tiny_model(seed=5), train, val, recipe, tmp_path, torch.device("cpu"), num_classes=8)
    assert again["resumed_from"] == 1 and again["history"] == done["history"] and again["top1"] == done["top1"]


def test_checkpoint_of_another_job_is_refused(tiny_tree, tmp_path):
    train, val = datasets(tiny_tree, cap=2)
    recipe = Recipe.from_dict({**FAST_RECIPE, "epochs": 1})
    fit(tiny_model(), train, val, recipe, tmp_path, torch.device("cpu"), num_classes=8)
    other = dataclasses.replace(recipe, lr=2e-3)
    with pytest.raises(CheckpointMismatch, match="differs in: recipe"):
        fit(tiny_model(), train, val, other, tmp_path, torch.device("cpu"), num_classes=8)


def test_recipe_errors_name_the_key():
    with pytest.raises(ValueError, match=r"recipe.epoch: unknown key; did you mean 'epochs'\? \(allowed: epochs, "):
        Recipe.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="recipe.lr: expected a number, got 'fast'"):
        Recipe.from_dict({"lr": "fast"})
    with pytest.raises(ValueError, match="batch_size=7 is not allowed: expected an even number"):
        Recipe.from_dict({"batch_size": 7, "mixup": 0.8})


def test_too_small_training_set_is_a_clear_error(tiny_tree, tmp_path):
    train, val = datasets(tiny_tree, cap=1)
    with pytest.raises(ValueError, match="smaller than one batch of 16"):
        fit(tiny_model(), train, val, Recipe.from_dict({**FAST_RECIPE, "epochs": 1}), tmp_path,
            torch.device("cpu"), num_classes=8)
