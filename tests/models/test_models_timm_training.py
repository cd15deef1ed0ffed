"""timm's training tooling on the backbones: layer-wise lr decay (``group_matcher``), gradient checkpointing
(``set_grad_checkpointing``), TorchScript (documented as unsupported), and timm's own ``train.py`` (slow; needs a
copy of the script, see docs/models.md "Training with timm's train.py")."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip("timm")
import timm.optim  # noqa: E402  (not imported by "import timm")

from attentions import models  # noqa: E402
from attentions.models import HierarchicalViT  # noqa: E402
from attnbench.metrics._cpu_memory import cpu_peak_bytes  # noqa: E402

TIMM_NAMES = [n for n in models.list_models() if n != "swap"]
REPO = Path(__file__).resolve().parents[2]


def lr_scales(model: torch.nn.Module, layer_decay: float = 0.75) -> dict[str, float]:
    """Parameter name -> the lr scale timm's optimizer factory gives it (the issue's command)."""
    opt = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=layer_decay)
    ids = {id(p): n for n, p in model.named_parameters()}
    return {ids[id(p)]: g["lr_scale"] for g in opt.param_groups for p in g["params"]}


def block_order(name: str) -> tuple:
    """Where a parameter sits from input to output: stem, (stage, block), head norm, head."""
    if name.startswith("downsample_layers.0."):
        return (0,)
    m = re.match(r"downsample_layers\.(\d+)\.", name)
    if m:
        return (1, int(m.group(1)), 0)  # the downsample before stage i goes with its first block
    m = re.match(r"stages\.(\d+)\.(\d+)\.", name)
    if m:
        return (1, int(m.group(1)), int(m.group(2)))
    if name.startswith("norm."):
        return (2,)
    assert name.startswith("head."), name
    return (3,)


def test_layer_decay_follows_the_stages():
    """Issue 19 #1: stem smallest, one scale per block rising through the stages, head 1.0 (was: ~36 generic layers
    with the stem at 1.34e-5)."""
    model = timm.create_model("debiformer_t", num_classes=10)
    scales = lr_scales(model)
    assert set(scales) == {n for n, _ in model.named_parameters()}
    by_place: dict[tuple, set] = {}
    for name, s in scales.items():
        by_place.setdefault(block_order(name), set()).add(s)
    assert all(len(s) == 1 for s in by_place.values()), by_place  # one scale per stem / block / head
    places = sorted(by_place)
    ordered = [by_place[p].pop() for p in places]
    # the head norm shares the last block's layer (timm's convention for a final norm); everything else rises
    head_norm = places.index((2,))
    assert ordered[head_norm] == ordered[head_norm - 1]
    rising = ordered[:head_norm] + ordered[head_norm + 1:]
    assert all(a < b for a, b in zip(rising, rising[1:])), rising
    assert ordered[-1] == 1.0 and ordered[0] == min(ordered)
    n_layers = 1 + sum(model.depths) + 1  # stem, each block (DeBiFormer-T: 7), head
    assert ordered[0] == pytest.approx(0.75 ** (n_layers - 1))
    assert ordered[0] > 1e-2  # not the "frozen in effect" 1.34e-5 of the generic fallback


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_group_matcher_places_every_parameter(name):
    """Every preset: the fine grouping has 1 + sum(depths) + 1 layers (head last), the coarse one 1 + 4 + 1."""
    model = timm.create_model(name, device="meta")
    fine = timm.models.group_parameters(model, model.group_matcher(coarse=False))
    coarse = timm.models.group_parameters(model, model.group_matcher(coarse=True))
    assert len(fine) == 1 + sum(model.depths) + 1
    assert len(coarse) == 1 + 4 + 1
    for groups in (fine, coarse):
        assert all(n.startswith("downsample_layers.0.") for n in groups[0])
        assert sorted(groups[max(groups)]) == ["head.bias", "head.weight"]
    assert sorted(n for n in coarse[2]) == sorted(n for n, _ in model.named_parameters()
                                                  if n.startswith(("downsample_layers.1.", "stages.1.")))


def small_model(**kwargs) -> HierarchicalViT:
    torch.manual_seed(0)
    return timm.create_model("debiformer_t", img_size=64, num_classes=10, drop_path_rate=0.1, **kwargs)


def loss_and_grads(model: HierarchicalViT, x: torch.Tensor, features_only: bool = False) -> dict:
    torch.manual_seed(1)  # same DropPath masks in both runs (checkpointing replays the RNG state)
    model.zero_grad(set_to_none=True)
    if features_only:
        loss = sum(f.square().mean() for f in model.forward_intermediates(x, intermediates_only=True))
    else:
        loss = model(x).logsumexp(-1).mean()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("features_only", [False, True])
def test_grad_checkpointing_same_gradients(features_only):
    """Issue 19 #1: ``set_grad_checkpointing`` exists and changes no gradient (training mode, stochastic depth on)."""
    model = small_model().train()
    x = torch.randn(2, 3, 64, 64)
    plain = loss_and_grads(model, x, features_only)
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing
    ckpt = loss_and_grads(model, x, features_only)
    assert plain.keys() == ckpt.keys() and len(plain) > 100
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], rtol=1e-4, atol=1e-6, msg=n)
    model.set_grad_checkpointing(False)
    assert not model.grad_checkpointing


def test_grad_checkpointing_lowers_peak_memory():
    """The same step holds less: peak CPU-allocator bytes of forward + backward (deterministic allocator events)."""
    model = small_model().train()
    x = torch.randn(4, 3, 64, 64)
    step = lambda: loss_and_grads(model, x)  # noqa: E731
    step()  # first-call allocations (lazy buffers) out of the way
    plain = cpu_peak_bytes(step)
    model.set_grad_checkpointing(True)
    ckpt = cpu_peak_bytes(step)
    assert ckpt < 0.8 * plain, (ckpt, plain)


def test_grad_checkpointing_is_off_in_eval_and_under_no_grad():
    """Inference with checkpointing on computes the same as without (checkpointing is a training-only switch)."""
    model = small_model().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)


def test_torch_jit_script_is_documented_as_unsupported():
    """TorchScript cannot compile the backbones: the attention configs are dataclasses held on the modules
    (docs/models.md says so); this is the failure a user sees. If it ever starts to work, update the docs."""
    model = timm.create_model("debiformer_t", img_size=64, num_classes=10).eval()
    with pytest.raises(ValueError, match=r"Unknown type annotation: '\w*Config\w*'"):
        torch.jit.script(model)
    doc = (REPO / "docs" / "models.md").read_text()
    assert "torch.jit.script" in doc and "not supported" in doc


# -- timm's own train.py ----------------------------------------------------------------------------------------

def _train_py() -> Path | None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from timm_train_check import find_train_py
    finally:
        sys.path.pop(0)
    return find_train_py()


@pytest.mark.slow
def test_timm_train_py_runs_debiformer_t_with_layer_decay_and_checkpointing(tmp_path):
    """Issue 19 #1: timm's train.py trains a few steps of debiformer_t with --layer-decay 0.75 --grad-checkpointing
    on a fake image folder (scripts/timm_train_check.py; docs/models.md has the command and its output)."""
    train_py = _train_py()
    if train_py is None:
        pytest.skip("timm's train.py not found: it is not in the timm wheel; set TIMM_TRAIN_PY=/path/to/train.py "
                    "(a pytorch-image-models checkout)")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "timm_train_check.py"), "--train-py", str(train_py),
                           "--workdir", str(tmp_path)], env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Model debiformer_t created" in out
    assert re.search(r"Train: 0 \[.*Loss", out) and "*** Best metric" in out, out[-4000:]
