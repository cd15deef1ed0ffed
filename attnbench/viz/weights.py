"""Where ``attnbench viz`` gets its models: a trained accuracy cell of a run, an official checkpoint, or random init.

A trained cell: the run's ``manifest.json`` holds the suite (``settings.accuracy``, ``seed``) and each ``ok`` row of
``results.jsonl`` with ``acc_top1`` names the attention, its config and device; together they rebuild the exact
:class:`attnbench.accuracy.job.Job`, hence the model and the job key under which training wrote
``jobs/<key>/checkpoint.pt``. :func:`locate_checkpoint` looks for it, in order: a path the row itself names
(any ``acc_*checkpoint*`` or ``acc_*dir`` column), the job folder under the run directory (``<run>/accuracy``, or
any ``jobs/<key>`` below the run), under the settings' ``work_dir``, ``$ATTNBENCH_ACC_WORK``, ``runs/accuracy`` and
the run's sibling ``accuracy/`` folder; then any ``checkpoint.pt`` below the run whose stored fingerprint is the
job's. No match is a one-line error that lists where it looked.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from ..core.errors import UserError
from ..core.results import MANIFEST_FILE, RESULTS_FILE, read_manifest, read_rows

__all__ = ["ModelSource", "from_run", "from_official", "random_init", "locate_checkpoint"]


@dataclasses.dataclass
class ModelSource:
    """A model to look into and how to label it.

    Attributes:
        label: the column title (usually the attention's name).
        model: a :class:`attentions.models.HierarchicalViT` (eval mode, CPU).
        weights: where the weights come from, for the figure (``"trained: run X, top-1 Y%"``, ``"random init"``).
        img_size: the input side the model was trained or configured for.
    """

    label: str
    model: Any
    weights: str
    img_size: int


def _read_run(run_dir: Path) -> tuple[dict, list[dict]]:
    if not (run_dir / MANIFEST_FILE).exists() or not (run_dir / RESULTS_FILE).exists():
        raise UserError(f"--run {run_dir}: not a run directory (expected {MANIFEST_FILE} and {RESULTS_FILE} in it)")
    return read_manifest(run_dir), read_rows(run_dir)


def _row_paths(row: dict) -> list[Path]:
    out = []
    for key, value in row.items():
        if key.startswith("acc_") and isinstance(value, str) and ("checkpoint" in key or key.endswith("dir")):
            p = Path(value)
            out.append(p if p.suffix == ".pt" else p / "checkpoint.pt")
    return out


def trained_size(row: dict) -> Optional[int]:
    """The input side a row's model was trained at: its ``acc_img_size`` column, else the ``@N`` that ends its
    ``acc_dataset`` label (``synthetic8@32``, ``imagenette@224``); None when the row records neither."""
    if row.get("acc_img_size") is not None:
        return int(row["acc_img_size"])
    m = re.search(r"@(\d+)$", str(row.get("acc_dataset") or ""))
    return int(m.group(1)) if m else None


def locate_checkpoint(run_dir: Path, row: dict, job) -> Path:
    """The checkpoint the accuracy job of ``row`` wrote (see the module docstring for the search order)."""
    from ..accuracy.job import WORK_ENV
    from ..accuracy.train import CHECKPOINT

    key = job.key()
    roots = [run_dir / "accuracy", run_dir]
    work = job.parsed.work_dir
    if work:
        roots += [Path(work), run_dir / work]
    if os.environ.get(WORK_ENV):
        roots.append(Path(os.environ[WORK_ENV]))
    roots += [Path("runs") / "accuracy", run_dir.parent / "accuracy"]
    candidates = _row_paths(row) + [r / "jobs" / key / CHECKPOINT for r in roots]
    candidates += sorted(run_dir.glob(f"**/jobs/{key}/{CHECKPOINT}"))
    for c in candidates:
        if c.is_file():
            return c
    import torch

    fingerprint = job.fingerprint()
    for c in sorted(run_dir.rglob(CHECKPOINT)):  # moved or renamed folders: match by the stored fingerprint
        if torch.load(c, map_location="cpu", weights_only=False).get("fingerprint") == fingerprint:
            return c
    looked = sorted({str(c.parent.parent.parent) for c in candidates if "jobs" in c.parts} | {str(run_dir)})
    raise UserError(f"--run {run_dir}: no checkpoint of the accuracy cell '{row.get('label')}' (job {key}) in "
                    f"{', '.join(looked)}; rerun it (attnbench run --resume {run_dir}) or use --official/--random")


def from_run(run_dir: str | Path, attentions: Optional[Sequence[str]] = None) -> list[ModelSource]:
    """The trained model of every ``ok`` accuracy cell of ``run_dir`` (only ``attentions`` when given)."""
    import torch

    from ..accuracy.job import build_model, make_job
    from attentions.models.official import unwrap_checkpoint

    run_dir = Path(run_dir)
    manifest, rows = _read_run(run_dir)
    suite = manifest.get("suite") or {}
    settings = (suite.get("settings") or {}).get("accuracy")
    rows = [r for r in rows if r.get("status") == "ok" and r.get("acc_top1") is not None]
    if settings is None or not rows:
        raise UserError(f"--run {run_dir}: the run has no finished accuracy cells (metric 'accuracy', status ok)")
    if attentions:
        missing = sorted(set(attentions) - {r["label"] for r in rows} - {r["attention"] for r in rows})
        if missing:
            have = ", ".join(sorted({r["label"] for r in rows}))
            raise UserError(f"--attention {', '.join(missing)}: no finished accuracy cell in {run_dir} (has: {have})")
        rows = [r for r in rows if r["label"] in attentions or r["attention"] in attentions]
    seen, out = set(), []
    for row in rows:
        if row["label"] in seen:  # the metric trains once per (attention, config, device)
            continue
        seen.add(row["label"])
        job = make_job(settings, row["attention"], row.get("config") or {}, row.get("device", "cpu"),
                       seed=int(suite.get("seed", 0)))
        size = trained_size(row)
        if size is not None and size != job.parsed.img_size:
            raise UserError(f"--run {run_dir}: the row of '{row['label']}' was trained at {size} px but the run's "
                            f"settings.accuracy.img_size is {job.parsed.img_size}; the manifest does not describe "
                            "these results")
        path = locate_checkpoint(run_dir, row, job)
        state = unwrap_checkpoint(torch.load(path, map_location="cpu", weights_only=False))
        head = state.get("head.weight")
        model = build_model(job, num_classes=int(head.shape[0]) if head is not None else 1000)
        model.load_state_dict(state)
        weights = f"trained ({run_dir.name}): top-1 {float(row['acc_top1']):.1f}% on {row.get('acc_dataset', '?')}"
        out.append(ModelSource(row["label"], model.eval(), weights, int(job.parsed.img_size)))
    return out


def from_official(model_name: str, checkpoint: str | Path) -> list[ModelSource]:
    """An official BiFormer/DeBiFormer checkpoint loaded into the registered model ``model_name``."""
    import torch

    from attentions import models

    path = Path(checkpoint)
    if not path.is_file():
        raise UserError(f"--official {model_name}={checkpoint}: no such checkpoint file")
    from attentions import OfficialStateDictError

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input
        raise UserError(f"--official {model_name}={path}: cannot be read by torch.load ({e})") from e
    try:
        model = models.from_official(model_name, checkpoint)
    except models.UnknownModelError as e:
        raise UserError(f"--official: {e}") from e
    except OfficialStateDictError as e:
        parts = [f"{len(v)} {k} (first: {v[0]})" for k, v in
                 (("missing", e.missing), ("unexpected", e.unexpected), ("wrongly shaped", e.wrong_shape)) if v]
        raise UserError(f"--official {model_name}={path}: the checkpoint does not fit {model_name}: "
                        f"{'; '.join(parts)}") from e
    return [ModelSource(model_name, model.eval(), f"official: {path.name}", 224)]


def random_init(attentions: Sequence[str], macro: str = "tiny", img_size: int = 224, seed: int = 0
                ) -> list[ModelSource]:
    """Each attention in every slot of ``macro`` (``swap``), randomly initialised with ``seed``."""
    import torch

    from attentions import models

    out = []
    for name in attentions:
        torch.manual_seed(seed)
        try:
            model = models.create_model("swap", attention=name, macro=macro, img_size=img_size, num_classes=8)
        except ValueError as e:
            raise UserError(f"--random: {e}") from e
        out.append(ModelSource(name, model.eval(), f"random init (seed {seed}, macro {macro})", img_size))
    return out
