"""DDP: two CPU processes (gloo) train the same model on their halves of the data and end with identical weights,
identical (summed) losses and identical accuracy."""
from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

pytest.importorskip("timm", reason="the accuracy extra (timm, torchvision) is not installed")
pytest.importorskip("torchvision", reason="the accuracy extra (timm, torchvision) is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from accuracy_helpers import FAST_RECIPE
    from attentions import models
    from attnbench.accuracy.data import ImageFolderSubset, build_transform
    from attnbench.accuracy.recipe import Recipe
    from attnbench.accuracy.train import fit, init_distributed

    info = init_distributed("cpu")
    assert (info.rank, info.world_size) == (rank, world) and torch.distributed.get_backend() == "gloo"
    train = ImageFolderSubset(root, "train", None, 4, build_transform(True, 32, "none"))
    val = ImageFolderSubset(root, "val", None, None, build_transform(False, 32, "none"))
    torch.manual_seed(rank)  # different inits per rank: DDP must broadcast rank 0's weights
    model = models.create_model("swap", attention="bra", macro="tiny", img_size=32, num_classes=8)
    recipe = Recipe.from_dict({**FAST_RECIPE, "batch_size": 8})
    result = fit(model, train, val, recipe, os.path.join(out, "run"), torch.device("cpu"), num_classes=8, info=info)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    torch.save({"params": params, "state": model.state_dict(), "result": result}, os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two gloo training processes: ~20-35 s on one loaded core; .ci/run runs it
def test_two_gloo_processes_agree(tiny_tree, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tiny_tree), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["params"].keys() == r1["params"].keys()
    for key in r0["params"]:
        assert torch.equal(r0["params"][key], r1["params"][key]), key
    h0, h1 = r0["result"]["history"], r1["result"]["history"]
    assert [h["train_loss"] for h in h0] == [h["train_loss"] for h in h1]
    assert r0["result"]["top1"] == r1["result"]["top1"]
    # the per-image flags are gathered from both ranks' strides into the validation order: the same on both
    # ranks, and those of the trained model evaluated in one process
    assert r0["result"]["top1_correct"] == r1["result"]["top1_correct"] and r0["result"]["val_n"] == 32
    from attentions import models
    from attnbench.accuracy.data import ImageFolderSubset, build_transform
    from attnbench.accuracy.train import evaluate

    model = models.create_model("swap", attention="bra", macro="tiny", img_size=32, num_classes=8)
    model.load_state_dict(r0["state"])
    val = ImageFolderSubset(str(tiny_tree), "val", None, None, build_transform(False, 32, "none"))
    single = evaluate(model, val, 8, torch.device("cpu"))
    assert single["top1_correct"] == r0["result"]["top1_correct"]
    # 32 training images, 2 ranks x batch 8: 2 steps per epoch, each rank sees 16 images, 32 counted per epoch
    assert [h["train_images"] for h in h0] == [32, 32]
    assert (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.slow  # torchrun and two training processes, each importing torch: ~45 s on one loaded core
def test_metric_trains_under_torchrun(tmp_path):
    """``nproc_per_node: 2``: the metric launches ``torchrun -m attnbench.accuracy train --job`` (gloo on CPU) and
    reads rank 0's result; the checkpoint records both processes' images."""
    from accuracy_helpers import FAST_RECIPE
    from attnbench.metrics import accuracy
    from attnbench.metrics.base import MetricContext

    settings = {"synthetic": True, "img_size": 32, "macro": "tiny", "synthetic_train_per_class": 4,
                "synthetic_val_per_class": 2, "work_dir": str(tmp_path), "log": False, "nproc_per_node": 2,
                "torchrun_args": ["--master-port", str(_free_port())],
                "recipe": {**FAST_RECIPE, "epochs": 1, "batch_size": 8}}
    ctx = MetricContext(attention="agent", config={}, make_module=lambda: None, batch=1, height=8, width=8,
                        dtype=torch.float32, device=torch.device("cpu"), settings={"accuracy": settings})
    cols = accuracy.measure(ctx)
    assert cols["acc_epochs"] == 1 and 0 <= cols["acc_top1"] <= 100 and cols["acc_model"] == "swap:tiny:agent"
    # threads "auto" in two torchrun processes: the usable cores shared out, no probe (rank 0's count recorded)
    from attnbench.accuracy.threads import usable_cores

    assert (cols["acc_threads"], cols["acc_threads_how"]) == (max(1, usable_cores() // 2), "auto-ddp")
    (job,) = (tmp_path / "jobs").iterdir()
    history = torch.load(job / "checkpoint.pt", weights_only=False)["history"]
    assert history[0]["train_images"] == 32  # 2 processes x 2 steps x batch 8
