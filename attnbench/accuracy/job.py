"""One accuracy job: which model (with which attention), which data, which recipe, where to checkpoint.

:class:`AccuracySettings` is the ``settings.accuracy`` mapping of a suite (also what ``python -m
attnbench.accuracy train`` builds from its flags); :func:`make_job` adds the attention of a cell;
:func:`run_job` builds model and data and trains (in this process, or in each ``torchrun`` process).

Model choice (``model``):
    * ``"swap"`` (default): macro design ``macro`` with the cell's attention in every slot, per-stage configs made
      for ``img_size`` (:func:`attentions.models.swap.slot_config`);
    * a registered name with ``{attention}``, e.g. ``"debiformer_t_swap_{attention}_iso"``: that preset per cell;
    * a registered name, e.g. ``"debiformer_t"``: that model whatever the cell's attention.
Every model is built with ``img_size`` (the presets derive every slot config from it, as ``swap`` does), so the
data and the model always agree on the input size.
The cell's config, less ``dim`` and ``num_heads`` (set per stage by the backbone), overrides every slot that takes
the key (e.g. ``impl: torch``, ``topk: 8``).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ..core.results import RUN_DIR_ENV
from ..core.validation import PositiveInt

__all__ = ["AccuracySettings", "Job", "make_job", "run_job", "build_model", "build_datasets", "default_work_root",
           "code_digest", "data_digest", "WORK_ENV", "RUN_DIR_ENV"]

WORK_ENV = "ATTNBENCH_ACC_WORK"
_PER_STAGE_KEYS = ("dim", "num_heads")


@dataclasses.dataclass(frozen=True)
class AccuracySettings:
    """``settings.accuracy`` of a suite. Every key is optional.

    Args:
        model, macro, img_size, model_kwargs: the backbone (see the module docstring); ``model_kwargs`` go to
            ``create_model`` (e.g. ``mlp_ratios``, ``drop_path_rate``).
        data_root: ImageNet-layout root (else ``$ATTNBENCH_DATA``); ignored with ``synthetic``.
        subset: ``imagenette``, ``imagenet100``, ``all``, a class-list file or a list of wnids.
        max_per_class, val_max_per_class: image caps per class (None: all).
        synthetic: use the generated dataset (:mod:`attnbench.accuracy.synthetic`), written under the work root.
        synthetic_train_per_class, synthetic_val_per_class, synthetic_seed: its size and seed (images are
            ``img_size`` square).
        recipe: :class:`attnbench.accuracy.recipe.Recipe` fields (the seed defaults to the suite's ``seed``).
        work_dir: checkpoints and generated data (default: ``$ATTNBENCH_ACC_WORK``, else
            ``$ATTNBENCH_RUN_DIR/accuracy``, else ``runs/accuracy``).
        resume: continue from a job's checkpoint when one exists (a finished job is not retrained).
        nproc_per_node: >1 trains in that many ``torchrun`` processes (DDP); ``torchrun_args`` are added to the
            torchrun command (e.g. ``["--nnodes", "2", "--rdzv-endpoint", "host:29400"]``).
        latency_batch: batch of the whole-model latency column (eval forward, float32).
        threads: CPU threads for training, evaluation and the model-latency column: a positive int, or
            ``"auto"`` (default), the fastest on this machine by the rule of :mod:`attnbench.accuracy.threads`
            (the process default on CUDA; 1 on a loaded CPU; else a short interleaved probe of 1, half and all
            free threads).
            Not part of the job key: a checkpoint resumes whatever the count.
        log: print one line per epoch to stderr.
    """

    model: str = "swap"
    macro: str = "debiformer_t"
    img_size: PositiveInt = 224
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    data_root: Optional[str] = None
    subset: Union[str, list, None] = "imagenette"
    max_per_class: Optional[int] = None
    val_max_per_class: Optional[int] = None
    synthetic: bool = False
    synthetic_train_per_class: PositiveInt = 100
    synthetic_val_per_class: PositiveInt = 25
    synthetic_seed: int = 0
    recipe: dict = dataclasses.field(default_factory=dict)
    work_dir: Optional[str] = None
    resume: bool = True
    nproc_per_node: PositiveInt = 1
    torchrun_args: list = dataclasses.field(default_factory=list)
    latency_batch: PositiveInt = 1
    threads: Union[int, str] = "auto"
    log: bool = True

    @classmethod
    def from_dict(cls, values: Optional[Mapping[str, Any]]) -> "AccuracySettings":
        """Validate ``settings.accuracy``; errors name the key, the value and what is expected."""
        from .recipe import Recipe, check_fields
        from .threads import check_threads

        values = dict(values or {})
        if "threads" in values:  # before the type check, whose wording for Union[int, str] is less helpful
            check_threads(values["threads"], "settings.accuracy.threads")
        check_fields(cls, values, "settings.accuracy")
        settings = cls(**values)
        if "img_size" in settings.model_kwargs:
            raise ValueError("settings.accuracy.model_kwargs.img_size is not allowed: set settings.accuracy.img_size "
                             "(it sizes both the model and the data)")
        Recipe.from_dict(settings.recipe, where="settings.accuracy.recipe")
        return settings






def default_work_root(settings: AccuracySettings) -> Path:
    """Where jobs keep checkpoints and generated data: ``work_dir`` when the suite sets one (a cache shared across
    runs, safe because a job's key covers every input), else the run directory being measured
    (``$ATTNBENCH_RUN_DIR/accuracy``, set by the runner), else ``$ATTNBENCH_ACC_WORK``, else ``runs/accuracy``
    (the standalone ``python -m attnbench.accuracy train``)."""
    if settings.work_dir:
        return Path(settings.work_dir)
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV]) / "accuracy"
    if os.environ.get(WORK_ENV):
        return Path(os.environ[WORK_ENV])
    return Path("runs") / "accuracy"


@functools.lru_cache(maxsize=None)
def code_digest() -> str:
    """12 hex digits of the sha1 of the training code and the model zoo (``attentions``, ``attnbench.accuracy``):
    a checkpoint trained by other code is not reused."""
    import attentions

    h = hashlib.sha1()
    roots = [Path(attentions.__file__).parent, Path(__file__).parent]
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root.parent)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


@functools.lru_cache(maxsize=64)
def data_digest(root: str, wnids: Optional[tuple[str, ...]]) -> str:
    """12 hex digits of the sha1 of the file listing (relative path, size, modification time) of the ``train`` and
    ``val`` class folders a job reads: changed, added or removed images give another key."""
    h = hashlib.sha1()
    base = Path(root)
    for split in ("train", "val"):
        folder = base / split
        if not folder.is_dir():
            continue
        classes = sorted(wnids) if wnids is not None else sorted(p.name for p in folder.iterdir() if p.is_dir())
        for wnid in classes:
            class_dir = folder / wnid
            if not class_dir.is_dir():
                continue
            for entry in sorted(os.scandir(class_dir), key=lambda e: e.name):
                st = entry.stat()
                h.update(f"{split}/{wnid}/{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything a training process needs, JSON-able (torchrun children read it from a file)."""

    settings: dict
    attention: str
    overrides: dict
    device: str
    seed: int

    @property
    def parsed(self) -> AccuracySettings:
        return AccuracySettings.from_dict(self.settings)

    def model_name(self) -> str:
        s = self.parsed
        return s.model.format(attention=self.attention) if "{attention}" in s.model else s.model

    def fingerprint(self) -> dict[str, Any]:
        s = self.parsed
        keep = ("model", "macro", "img_size", "model_kwargs", "data_root", "subset", "max_per_class",
                "val_max_per_class", "synthetic", "synthetic_train_per_class", "synthetic_val_per_class",
                "synthetic_seed")
        return {"model": self.model_name(), "attention": self.attention, "overrides": self.overrides,
                "settings": {k: getattr(s, k) for k in keep}, "recipe": s.recipe, "seed": self.seed,
                "data": self.data_identity(), "code": code_digest()}

    def data_identity(self) -> Optional[dict[str, Any]]:
        """The resolved data root and its file-listing digest (None for the synthetic set, which the settings
        determine); a missing root is left to :func:`build_datasets` to report."""
        s = self.parsed
        if s.synthetic:
            return None
        from .data import DataError, read_class_list, resolve_data_root

        try:
            root = resolve_data_root(s.data_root)
        except DataError:
            return None
        wnids = read_class_list(s.subset)
        return {"root": str(root.resolve()), "digest": data_digest(str(root.resolve()),
                                                                    tuple(wnids) if wnids is not None else None)}

    def key(self) -> str:
        digest = hashlib.sha1(json.dumps(self.fingerprint(), sort_keys=True, default=str).encode()).hexdigest()
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.attention)
        return f"{safe}-{digest[:12]}"

    def out_dir(self) -> Path:
        return default_work_root(self.parsed) / "jobs" / self.key()


def make_job(settings: Mapping[str, Any], attention: str, config: Mapping[str, Any], device: str,
             seed: int = 0) -> Job:
    """The job of one cell: the cell's attention and config (less per-stage keys) on ``device``."""
    AccuracySettings.from_dict(settings)  # fail before any work
    overrides = {k: v for k, v in dict(config).items() if k not in _PER_STAGE_KEYS}
    return Job(settings=dict(settings), attention=attention, overrides=overrides, device=str(device), seed=seed)


def build_model(job: Job, num_classes: int):
    """The backbone of ``job`` (seeded by the job's seed, so every attention starts from the same stem)."""
    import torch

    from attentions import models

    s = job.parsed
    recipe = dict(s.recipe)
    kwargs = dict(s.model_kwargs, num_classes=num_classes, attn_overrides=job.overrides or None,
                  img_size=s.img_size)
    if recipe.get("drop_path") is not None:
        kwargs["drop_path_rate"] = recipe["drop_path"]
    torch.manual_seed(job.seed)
    if s.model == "swap":
        return models.create_model("swap", attention=job.attention, macro=s.macro, **kwargs)
    try:
        return models.create_model(job.model_name(), **kwargs)
    except TypeError as exc:  # an entrypoint of one's own that was written without img_size
        if "img_size" not in str(exc):
            raise
        raise ValueError(f"settings.accuracy.model={s.model!r}: model {job.model_name()!r} does not take img_size; "
                         f"accuracy jobs build every model for settings.accuracy.img_size={s.img_size}, so its "
                         "entrypoint must accept img_size (and size its attention slots by it)") from exc


def build_datasets(job: Job):
    """(train set, val set, class names, dataset label) of ``job``."""
    from .data import ImageFolderSubset, build_transform, resolve_data_root
    from .recipe import Recipe
    from .synthetic import write_synthetic_imagefolder

    s = job.parsed
    recipe = Recipe.from_dict(s.recipe)
    if s.synthetic:
        name = f"synthetic-{s.img_size}px-{s.synthetic_train_per_class}x-s{s.synthetic_seed}"
        root = write_synthetic_imagefolder(default_work_root(s) / "data" / name, s.synthetic_train_per_class,
                                           s.synthetic_val_per_class, s.img_size, s.synthetic_seed)
        subset, label = None, f"synthetic8@{s.img_size}"
    else:
        root = resolve_data_root(s.data_root)
        subset = s.subset
        label = f"{subset if isinstance(subset, str) else f'{len(subset)}-classes'}@{s.img_size}"
        if s.max_per_class:
            label += f"(≤{s.max_per_class}/class)"
    train = ImageFolderSubset(root, "train", subset, s.max_per_class,
                              build_transform(True, s.img_size, recipe.augment, recipe.randaugment, recipe.reprob))
    val = ImageFolderSubset(root, "val", subset, s.val_max_per_class,
                            build_transform(False, s.img_size, recipe.augment))
    return train, val, train.classes, label


def run_job(job: Job, log=None) -> Optional[dict[str, Any]]:
    """Train and evaluate ``job`` in this process (a torchrun process joins its group); the result on rank 0.

    The result is :func:`attnbench.accuracy.train.fit`'s, plus ``model``, ``dataset``, ``params``, ``num_classes``,
    ``out_dir``, ``world_size`` (training processes), ``threads`` (torch threads of each training process),
    ``threads_how`` and ``threads_probe_ms`` (:class:`attnbench.accuracy.threads.ThreadChoice`). The process's
    thread count is restored on return.
    """
    import torch

    from .recipe import Recipe
    from .threads import choose_threads, use_threads
    from .train import fit, init_distributed

    s = job.parsed
    device = torch.device(job.device)
    info = init_distributed(device.type)
    if device.type == "cuda" and info.active:
        device = torch.device("cuda", info.local_rank)
    recipe = Recipe.from_dict({"seed": job.seed, **s.recipe})
    train, val, classes, label = build_datasets(job)
    model = build_model(job, len(classes))
    choice = choose_threads(s.threads, model, device, s.img_size, recipe.batch_size,
                            int(s.model_kwargs.get("in_chans", 3)))
    if log is not None and info.is_main:
        log(f"threads {choice.threads} ({choice.how}"
            + (f": ms/step {choice.probe_ms}" if choice.probe_ms else "") + ")")
    with use_threads(choice.threads):
        result = fit(model, train, val, recipe, job.out_dir(), device, num_classes=len(classes),
                     fingerprint=job.fingerprint(), resume=s.resume, info=info, log=log)
    if not info.is_main:
        return None
    params = sum(p.numel() for p in model.parameters())
    return {**result, "reused": result.get("resumed_from", 0) >= result.get("epochs", 0) > 0,
            "model": job.model_name() if s.model != "swap" else f"swap:{s.macro}:{job.attention}",
            "dataset": label, "params": params, "num_classes": len(classes),
            "out_dir": str(job.out_dir()),
            "world_size": info.world_size, "threads": choice.threads, "threads_how": choice.how,
            "threads_probe_ms": choice.probe_ms}
