"""Train and evaluate one model: the loop, per-epoch checkpoints, resume, DistributedDataParallel.

Reproducibility: the sampler is a ``DistributedSampler`` seeded with the recipe's seed (also with one process), so
every attention of a sweep sees the same images in the same order; at the start of every epoch the torch, numpy
and Python generators are reseeded from (seed, epoch, rank), so augmentation, mixup and drop-path draws depend only
on the epoch. A run resumed from the checkpoint of epoch e therefore continues exactly as the uninterrupted run
would have (bit for bit on CPU; up to non-deterministic CUDA kernels on GPU).

Checkpoints: ``<out_dir>/checkpoint.pt`` after every epoch (written to a temporary file and renamed, by rank 0):
model, optimizer and gradient-scaler state, the epoch, the per-epoch history, and a fingerprint of the job (model,
data, recipe); resuming a checkpoint made for another job is refused.

Distributed: launched by ``torchrun`` (``WORLD_SIZE`` > 1), :func:`init_distributed` joins the process group (NCCL
on CUDA, gloo on CPU); the model is wrapped in DDP, each rank reads its shard of the training set and of the
validation set, and losses and accuracy counts are summed over ranks. BatchNorm statistics stay per rank (no
SyncBatchNorm), as in the official training scripts.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..core.job_record import report_epoch
from ..core.results import replace_atomically
from .recipe import Recipe, make_criterion, make_mixup, make_optimizer, make_scheduler

__all__ = ["DistInfo", "init_distributed", "fit", "evaluate", "seed_epoch", "CHECKPOINT", "CheckpointMismatch"]

CHECKPOINT = "checkpoint.pt"


class CheckpointMismatch(ValueError):
    """A checkpoint exists in the output folder but was made for a different job."""


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str = "cpu") -> DistInfo:
    """Join the process group when launched by torchrun with more than one process; otherwise a 1-process info."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Reseed torch, numpy and Python from (seed, epoch, rank)."""
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(2)
    torch.manual_seed(int(state[0]))
    np.random.seed(int(state[1]))
    random.seed(int(state[0]))


def _sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if info.active:
        dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device, info: DistInfo = DistInfo(),
             num_workers: int = 0, amp_dtype: Optional[torch.dtype] = None) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy over ``dataset`` (each rank its stride of it), the number
    of images ``n`` and ``top1_correct``: one bool per image, in the dataset's order (gathered from every rank).

    Top-5 is top-min(5, classes).
    """
    model.eval()
    shard = Subset(dataset, range(info.rank, len(dataset), info.world_size))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    correct1 = correct5 = count = loss = 0.0
    hits1: list[torch.Tensor] = []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(x)
        logits = logits.float()
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == y[:, None]
        correct1 += float(hits[:, 0].sum())
        correct5 += float(hits.any(dim=1).sum())
        count += len(y)
        hits1.append(hits[:, 0].cpu())
    correct1, correct5, count, loss = _sum([correct1, correct5, count, loss], info, device)
    mine = torch.cat(hits1) if hits1 else torch.zeros(0, dtype=torch.bool)
    return {"top1": 100 * correct1 / count, "top5": 100 * correct5 / count, "loss": loss / count,
            "n": int(count), "top1_correct": _gather_strided(mine, len(dataset), info, device)}


def _gather_strided(mine: torch.Tensor, total: int, info: DistInfo, device: torch.device) -> list[bool]:
    """Per-image flags of the whole dataset in its order, from each rank's stride ``rank, rank + world, ...``."""
    if not info.active:
        return mine.tolist()
    longest = -(-total // info.world_size)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[:len(mine)] = mine.to(device=device, dtype=torch.uint8)
    parts = [torch.empty_like(padded) for _ in range(info.world_size)]
    dist.all_gather(parts, padded)
    flags = torch.zeros(total, dtype=torch.bool)
    for rank, part in enumerate(parts):
        stride = len(range(rank, total, info.world_size))
        flags[rank::info.world_size] = part[:stride].cpu().bool()
    return flags.tolist()


class _Trainer:
    """State of one training run; :func:`fit` drives it."""

    def __init__(self, model: nn.Module, train_set: Dataset, recipe: Recipe, device: torch.device, info: DistInfo,
                 num_classes: int):
        self.recipe, self.device, self.info = recipe, device, info
        self.model = model.to(device)
        self.ddp = nn.parallel.DistributedDataParallel(
            self.model, device_ids=[device.index] if device.type == "cuda" else None) if info.active else self.model
        self.sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                          seed=recipe.seed, drop_last=True)
        self.loader = DataLoader(train_set, batch_size=recipe.batch_size, sampler=self.sampler, drop_last=True,
                                 num_workers=recipe.num_workers, pin_memory=device.type == "cuda")
        self.steps = len(self.loader)
        if self.steps == 0:
            raise ValueError(f"the training set ({len(train_set)} images) is smaller than one batch of "
                             f"{recipe.batch_size} per process × {info.world_size} processes: lower batch_size")
        self.optimizer = make_optimizer(self.model, recipe, info.world_size)
        self.scheduler = make_scheduler(self.optimizer, recipe, self.steps)
        self.mixup = make_mixup(recipe, num_classes)
        self.criterion = make_criterion(recipe)
        use_amp = recipe.amp and device.type == "cuda"
        self.amp_dtype = getattr(torch, recipe.amp_dtype) if use_amp else None
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_amp and recipe.amp_dtype == "float16")

    def train_epoch(self, epoch: int) -> dict[str, float]:
        r, model = self.recipe, self.ddp
        seed_epoch(r.seed, epoch, self.info.rank)
        self.sampler.set_epoch(epoch)
        model.train()
        loss_sum, images = 0.0, 0
        t0 = time.perf_counter()
        for step, (x, y) in enumerate(self.loader):
            self.scheduler.step_update(epoch * self.steps + step)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.mixup is not None:
                x, y = self.mixup(x, y)
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                loss = self.criterion(model(x), y)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"training loss is {value} at epoch {epoch}, step {step}")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if r.clip_grad is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), r.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += value * len(x)
            images += len(x)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        loss_sum, images, seconds = _sum([loss_sum, images, seconds], self.info, self.device)
        seconds /= self.info.world_size  # mean wall time of the ranks
        return {"train_loss": loss_sum / images, "train_images": images, "train_seconds": seconds,
                "lr": self.optimizer.param_groups[0]["lr"]}

    def state(self, epoch: int, history: list, fingerprint: dict) -> dict[str, Any]:
        return {"format": 1, "epoch": epoch, "history": history, "fingerprint": fingerprint,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])


def _save(path: Path, state: dict[str, Any]) -> None:
    """Checkpoint atomically: a job killed mid-save leaves the previous checkpoint whole."""
    buf = io.BytesIO()
    torch.save(state, buf)
    replace_atomically(path, buf.getvalue())


def _load_checkpoint(path: Path, fingerprint: dict) -> Optional[dict[str, Any]]:
    if not path.exists():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("fingerprint") != fingerprint:
        theirs, ours = ckpt.get("fingerprint") or {}, fingerprint
        diff = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        raise CheckpointMismatch(f"{path} was saved by a different job (differs in: {', '.join(diff)}); "
                                 "use another output folder or delete it to start over")
    return ckpt


def fit(model: nn.Module, train_set: Dataset, val_set: Dataset, recipe: Recipe, out_dir: str | Path,
        device: torch.device, *, num_classes: int, fingerprint: Optional[dict] = None, resume: bool = True,
        info: DistInfo = DistInfo(), log: Optional[Callable[[str], None]] = None,
        stop_after_epoch: Optional[int] = None) -> dict[str, Any]:
    """Train ``model`` with ``recipe``, evaluate, checkpoint every epoch; resume from ``out_dir`` when asked.

    Args:
        model: the (unwrapped) model; it ends with the trained weights.
        fingerprint: JSON-able description of the job; a checkpoint must match it to be resumed.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists (a finished run just re-evaluates).
        stop_after_epoch: stop (as a crash would) after that epoch's checkpoint; for tests.

    Returns:
        ``top1``, ``top5``, ``val_loss``, ``train_loss_final``, ``throughput_img_s`` (training images over summed
        epoch wall time, data loading included), ``epochs``, ``resumed_from`` (epochs done before) and
        ``history`` (one dict per epoch: train_loss, lr, train_images, train_seconds, top1/top5/val_loss when
        evaluated), ``val_n`` (validation images) and ``top1_correct`` (one bool per validation image, in the
        validation set's order: was the top-1 prediction right).
    """
    fingerprint = dict(fingerprint or {}, recipe=dataclasses.asdict(recipe))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer = _Trainer(model, train_set, recipe, device, info, num_classes)
    ckpt = _load_checkpoint(out / CHECKPOINT, fingerprint) if resume else None
    history: list[dict[str, Any]] = []
    if ckpt is not None:
        trainer.load(ckpt)
        history = list(ckpt["history"])
    resumed_from = len(history)
    last_eval: Optional[dict[str, Any]] = None  # the per-image flags are not checkpointed: kept in memory
    say = log if (log is not None and info.is_main) else (lambda _: None)
    for epoch in range(resumed_from, recipe.epochs):
        row = {"epoch": epoch, **trainer.train_epoch(epoch)}
        if (epoch + 1) % recipe.eval_every == 0 or epoch + 1 == recipe.epochs:
            ev = evaluate(trainer.model, val_set, recipe.batch_size, device, info, recipe.num_workers,
                          trainer.amp_dtype)
            row.update(top1=ev["top1"], top5=ev["top5"], val_loss=ev["loss"])
            last_eval = ev
        history.append(row)
        if info.is_main:
            _save(out / CHECKPOINT, trainer.state(epoch, history, fingerprint))
            (out / "history.json").write_text(json.dumps(history, indent=1))
        if info.active:
            dist.barrier()
        if info.is_main:  # `attnbench status` shows it (a batch job's progress file)
            report_epoch(epoch + 1, recipe.epochs)
        say(f"epoch {epoch + 1}/{recipe.epochs}: loss {row['train_loss']:.4f}"
            + (f", top-1 {row['top1']:.2f}%" if "top1" in row else "")
            + f", {row['train_images'] / max(row['train_seconds'], 1e-9):.1f} img/s")
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    final = last_eval if last_eval is not None and history and "top1" in history[-1] else None
    return _result(trainer, val_set, device, info, history, resumed_from, final)


def _result(trainer: _Trainer, val_set: Dataset, device: torch.device, info: DistInfo,
            history: list[dict[str, Any]], resumed_from: int,
            final: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    last = history[-1] if history else {}
    if final is None:  # stopped early, or resumed (the checkpoint holds no per-image flags): evaluate now
        final = evaluate(trainer.model, val_set, trainer.recipe.batch_size, device, info,
                         trainer.recipe.num_workers, trainer.amp_dtype)
        if "top1" not in last:
            last = {**last, "top1": final["top1"], "top5": final["top5"], "val_loss": final["loss"]}
    images = sum(h["train_images"] for h in history)
    seconds = sum(h["train_seconds"] for h in history)
    return {"top1": last["top1"], "top5": last["top5"], "val_loss": last["val_loss"],
            "train_loss_final": last.get("train_loss", float("nan")),
            "throughput_img_s": images / seconds if seconds > 0 else float("nan"),
            "epochs": len(history), "resumed_from": resumed_from, "history": history,
            "val_n": final["n"], "top1_correct": final["top1_correct"]}
