#!/usr/bin/env python3
"""Run timm's own ``train.py`` for a few steps of a backbone of ``attentions.models`` on a fake image folder.

timm's ``train.py`` is not part of the ``timm`` wheel: it lives in the pytorch-image-models repository. Point this
script at a copy (``--train-py PATH`` or ``TIMM_TRAIN_PY=PATH``; a checkout beside this repository,
``../pytorch-image-models/train.py``, is found by itself). Nothing from that repository is copied here.

What it does: writes a tiny ImageFolder dataset (random RGB images, ``train/`` and ``validation/`` with
``--classes`` class folders), then runs::

    python3 train.py --data-dir DATA --device-modules attentions.models --model debiformer_t
        --model-kwargs img_size=64 --img-size 64 --num-classes 4 --device cpu --workers 0 --no-prefetcher
        --opt adamw --lr 1e-3 --weight-decay 0.05 --layer-decay 0.75 --grad-checkpointing
        --epochs 1 --warmup-epochs 0 -b 4 --log-interval 1 --output OUT

``--device-modules attentions.models`` is train.py's own hook for importing a module before the model is built:
that import registers the backbones with timm. Extra arguments after ``--`` go to train.py unchanged.

Usage::

    PYTHONPATH=. python3 scripts/timm_train_check.py --train-py /path/to/pytorch-image-models/train.py
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
ENV_VAR = "TIMM_TRAIN_PY"


def find_train_py(explicit: Optional[str] = None) -> Optional[Path]:
    """timm's train.py: ``explicit``, else ``$TIMM_TRAIN_PY``, else a pytorch-image-models checkout beside this
    repository; None when none exists."""
    for candidate in (explicit, os.environ.get(ENV_VAR), REPO.parent / "pytorch-image-models" / "train.py"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def write_fake_image_folder(root: Path, classes: int, per_class: dict[str, int], size: int) -> Path:
    """``root/<split>/class_<k>/<i>.png`` random RGB images (what timm's default ImageFolder reader takes)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for k in range(classes):
            folder = root / split / f"class_{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def train_command(train_py: Path, data: Path, output: Path, model: str, img_size: int, classes: int,
                  batch_size: int, extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, str(train_py), "--data-dir", str(data), "--device-modules", "attentions.models",
            "--model", model, "--model-kwargs", f"img_size={img_size}", "--img-size", str(img_size),
            "--num-classes", str(classes), "--device", "cpu", "--workers", "0", "--no-prefetcher",
            "--opt", "adamw", "--lr", "1e-3", "--weight-decay", "0.05", "--layer-decay", "0.75",
            "--grad-checkpointing", "--epochs", "1", "--warmup-epochs", "0", "-b", str(batch_size),
            "--log-interval", "1", "--output", str(output), *extra]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-py", help=f"timm's train.py (default: ${ENV_VAR} or ../pytorch-image-models)")
    parser.add_argument("--workdir", help="where the fake data and train.py's output go (default: a temp dir)")
    parser.add_argument("--model", default="debiformer_t")
    parser.add_argument("--img-size", type=int, default=64, help="image side (a multiple of 32)")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--train-per-class", type=int, default=4, help="training images per class")
    parser.add_argument("-b", "--batch-size", type=int, default=4)
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    train_py = find_train_py(args.train_py)
    if train_py is None:
        print(f"timm_train_check: timm's train.py not found (it is not in the timm wheel); pass --train-py PATH or "
              f"set {ENV_VAR} to the train.py of a pytorch-image-models checkout", file=sys.stderr)
        return 2
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="timm_train_check_"))
    data = write_fake_image_folder(work / "data", args.classes,
                                   {"train": args.train_per_class, "validation": 1}, args.img_size)
    cmd = train_command(train_py, data, work / "output", args.model, args.img_size, args.classes, args.batch_size,
                        extra)
    print("$ " + " ".join(cmd), flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main())
