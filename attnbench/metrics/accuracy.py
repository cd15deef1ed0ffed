"""Metric ``accuracy``: train a backbone with the cell's attention in it and report its validation accuracy.

Method (settings: ``settings.accuracy``, see :class:`attnbench.accuracy.job.AccuracySettings`):
    1. The model: the macro design (default ``swap`` of DeBiFormer-T) with the cell's attention in every slot;
       the cell's config, less ``dim``/``num_heads`` (per stage), overrides every slot. Seeded by the suite seed.
       Built for ``img_size`` (presets such as ``debiformer_t_swap_{attention}_iso`` as well as ``swap``).
    2. The data: an ImageNet-layout subset from ``data_root`` / ``$ATTNBENCH_DATA`` (or the synthetic dataset),
       the same images, order and augmentation draws for every attention.
    3. Training with the recipe (:mod:`attnbench.accuracy.recipe`), a checkpoint per epoch under the job's
       folder in the run directory; a job whose checkpoint exists is resumed (a finished one is only re-evaluated), so after a crash
       ``attnbench run --resume RUN_DIR`` continues where training stopped. ``nproc_per_node`` > 1 runs it under
       ``torchrun`` (DDP) in child processes; in a process that is already one of several (``WORLD_SIZE`` > 1,
       e.g. a multi-node job of ``attnbench run --executor slurm``, see docs/cluster.md) it trains in-process
       and joins that group.
    4. Whole-model cost of the trained architecture: fvcore MACs (attnbench's handles, batch 1, at ``img_size``)
       and eval-forward latency (float32, ``latency_batch``), for the accuracy-vs-cost figures.
    5. Threads: ``settings.accuracy.threads`` (an int, or ``"auto"``: the fastest on this machine, see
       :mod:`attnbench.accuracy.threads`) sets ``torch.set_num_threads`` for training, evaluation and the
       model-latency measurement; the process's count is restored afterwards.

Columns: ``acc_top1``, ``acc_top5`` (%, final epoch), ``acc_train_loss_final``, ``acc_train_throughput_img_s``
(training images / summed epoch wall time, data loading included, all processes), ``acc_epochs``,
``acc_world_size`` (training processes), ``acc_resumed_from_epoch`` (epochs a checkpoint held when it started),
``acc_dataset``, ``acc_model``, ``acc_params``,
``acc_loss_curve`` (training loss per epoch), ``acc_top1_curve`` (validation top-1 per evaluated epoch),
``acc_threads`` (torch threads of each training process, also those of the model-latency column),
``acc_threads_how`` (``set``, ``auto-probe``, ``auto-loaded``, ``auto-one-core``, ``auto-cuda``, ``auto-ddp``), ``acc_threads_probe_ms`` (the probe's median step time per
candidate, ms; None without a probe), ``acc_reused`` (true when a finished job's checkpoint was reused and nothing
was trained now; its throughput is then the stored one), ``model_macs_fvcore``, ``model_latency_ms_median``.
Uncertainty (docs/accuracy.md): ``acc_val_n`` (validation images), ``acc_top1_ci_low``/``acc_top1_ci_high`` and
``acc_top5_ci_low``/``acc_top5_ci_high`` (the 95% Wilson score interval, in percent like ``acc_top1``),
``acc_top1_correct`` (per-image top-1 correctness in validation order, packed: :mod:`attnbench.core.correct_bits`), and
``acc_seed`` (the training seed: the suite's ``seed``, or the cell's from a ``seeds`` list).

Jobs live in the run directory (``RUN_DIR/accuracy/jobs/<attention>-<key>``, unless ``work_dir`` names a shared
folder); the key hashes every input: model, config, data root and the digest of its file listing, recipe, seed and
the digest of the training and model code (:meth:`attnbench.accuracy.job.Job.fingerprint`).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import torch

from .base import MetricContext

__all__ = ["DEPENDS_ON", "validate_settings", "measure", "model_cost"]

#: training depends on the attention, its config, the device and the seed (a cell key only in suites with a
#: ``seeds`` list), not on the cell's token grid, batch or pass
DEPENDS_ON = ("attention", "config", "device", "seed")


def validate_settings(settings: Mapping[str, Any]) -> None:
    """Check ``settings.accuracy`` at suite load time (raises ValueError naming the key)."""
    from ..accuracy.job import AccuracySettings

    AccuracySettings.from_dict(settings)


def _run_torchrun(job, nproc: int, extra: list) -> dict[str, Any]:
    """Train ``job`` in ``nproc`` torchrun processes; the result rank 0 wrote."""
    import dataclasses

    with tempfile.TemporaryDirectory(prefix="attnbench-acc-") as tmp:
        job_file, result_file = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_file.write_text(json.dumps(dataclasses.asdict(job), default=str))
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", *map(str, extra),
               "-m", "attnbench.accuracy", "train", "--job", str(job_file), "--result", str(result_file)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0 or not result_file.exists():
            tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-3:]
            raise RuntimeError(f"torchrun training exited with code {proc.returncode}: {' | '.join(tail)}")
        return json.loads(result_file.read_text())


def model_cost(model: torch.nn.Module, img_size: int, device: torch.device, batch: int = 1) -> dict[str, Any]:
    """fvcore MACs (batch 1, CPU) and median eval-forward latency (ms, ``batch``, float32) of a whole model."""
    from .flops import count_fvcore
    from .latency import summarize

    model = model.eval()
    macs = count_fvcore(model.cpu(), torch.zeros(1, 3, img_size, img_size)).total
    model = model.to(device)
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    samples: list[float] = []
    with torch.no_grad():
        for i in range(3 + 50):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 3:
                samples.append((time.perf_counter() - t0) * 1e3)
            if i >= 8 and sum(samples) > 500:  # >= 5 samples and 0.5 s, as the latency metric's defaults
                break
    return {"model_macs_fvcore": int(macs), "model_latency_ms_median": summarize(samples)["latency_ms_median"]}


def uncertainty_columns(top1_correct: list, top5: float, n: int) -> dict[str, Any]:
    """``acc_val_n``, the 95% Wilson intervals of top-1 and top-5 (percent) and the packed per-image flags."""
    from ..core.correct_bits import encode_bits
    from ..core.stats import proportion_interval

    if len(top1_correct) != n:
        raise RuntimeError(f"the evaluation returned {len(top1_correct)} per-image flags for {n} validation images")
    top1_k, top5_k = int(sum(map(bool, top1_correct))), int(round(top5 * n / 100))
    (lo1, hi1), (lo5, hi5) = proportion_interval(top1_k, n), proportion_interval(top5_k, n)
    return {"acc_val_n": n, "acc_top1_ci_low": 100 * lo1, "acc_top1_ci_high": 100 * hi1,
            "acc_top5_ci_low": 100 * lo5, "acc_top5_ci_high": 100 * hi5,
            "acc_top1_correct": encode_bits(top1_correct)}


def measure(ctx: MetricContext) -> dict[str, Any]:
    """Train and evaluate the cell's attention in the configured backbone; the ``acc_*`` columns."""
    from ..accuracy.job import AccuracySettings, build_model, make_job, run_job
    from ..accuracy.threads import use_threads

    raw = dict(ctx.settings.get("accuracy") or {})
    settings = AccuracySettings.from_dict(raw)
    job = make_job(raw, ctx.attention, ctx.config, str(ctx.device), seed=ctx.seed)
    log = (lambda line: print(f"  [accuracy {ctx.attention}] {line}", file=sys.stderr, flush=True)) \
        if settings.log else None
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1  # already one of several processes (a cluster job)
    if (settings.nproc_per_node > 1 or settings.torchrun_args) and not launched:
        result = _run_torchrun(job, settings.nproc_per_node, settings.torchrun_args)
    else:
        result = run_job(job, log=log)
    history = result["history"]
    columns = {
        "acc_top1": float(result["top1"]), "acc_top5": float(result["top5"]),
        "acc_train_loss_final": float(result["train_loss_final"]),
        "acc_train_throughput_img_s": float(result["throughput_img_s"]),
        "acc_epochs": int(result["epochs"]), "acc_dataset": result["dataset"], "acc_model": result["model"],
        "acc_img_size": int(settings.img_size),
        "acc_world_size": int(result.get("world_size", 1)),
        "acc_resumed_from_epoch": int(result.get("resumed_from", 0)),
        "acc_params": int(result["params"]),
        # the top-1's denominator: what an interval of the accuracy (stats.proportion_interval) needs
        "acc_loss_curve": [float(h["train_loss"]) for h in history],
        "acc_top1_curve": [float(h["top1"]) for h in history if "top1" in h],
        # a finished job found in the work folder is re-evaluated, not retrained: the row says so
        "acc_reused": bool(result.get("reused", False)),
        "acc_threads": int(result["threads"]), "acc_threads_how": str(result["threads_how"]),
        "acc_threads_probe_ms": result.get("threads_probe_ms"),
        "acc_seed": int(ctx.seed),
        **uncertainty_columns(result["top1_correct"], float(result["top5"]), int(result["val_n"])),
    }
    model = build_model(job, num_classes=int(result["num_classes"]))
    with use_threads(columns["acc_threads"]):  # the training processes' count (rank 0's, under torchrun)
        columns.update(model_cost(model, settings.img_size, ctx.device, settings.latency_batch))
    return columns
