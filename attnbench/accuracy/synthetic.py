"""A small synthetic ImageFolder whose classes need spatial reasoning, not colour.

Eight classes in two families:

* ``stripes_*``: the whole image is striped, the class is the orientation (horizontal, vertical, diagonal ``\\``,
  anti-diagonal ``/``); period and phase are random.
* ``pair_*``: two equal squares on a plain background, the class is how they are arranged: side by side in one
  row, stacked in one column, along the ``\\`` diagonal or along the ``/`` diagonal; size and place are random.

Every image draws its two colours (foreground, background) independently from the same distribution, whatever
its class, so a pixel's colour says nothing about the class; only where colours are, and how they are arranged,
does. Gaussian pixel noise is added. Chance level is 1/8. Labels depend on orientation and position, so train
with ``augment: none`` (no flips or crops).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Union

import numpy as np

__all__ = ["CLASSES", "render", "write_synthetic_imagefolder"]

CLASSES = ("pair_antidiagonal", "pair_column", "pair_diagonal", "pair_row",
           "stripes_antidiagonal", "stripes_diagonal", "stripes_horizontal", "stripes_vertical")


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two colours, uniform in RGB, at least 100 apart (a pair is redrawn, symmetric in fg/bg, so both stay
    identically distributed)."""
    while True:
        fg, bg = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        if np.linalg.norm(fg - bg) >= 100:
            return fg, bg


def _stripes(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    period = rng.integers(max(4, size // 8), max(5, size // 3) + 1)
    y, x = np.mgrid[0:size, 0:size]
    t = {"horizontal": y, "vertical": x, "diagonal": x + y, "antidiagonal": x - y}[kind]
    return ((t + rng.integers(0, period)) % period) < period / 2


def _pair(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    side = int(rng.integers(max(2, size // 8), max(3, size // 5) + 1))
    lo = side + max(1, side // 2)  # the squares never touch
    gap = int(rng.integers(lo, max(lo, size // 2 - side) + 1))  # offset between the squares' corners
    dy, dx = {"row": (0, gap), "column": (gap, 0), "diagonal": (gap, gap), "antidiagonal": (gap, -gap)}[kind]
    y0 = int(rng.integers(0, size - side - dy + 1))
    x_lo, x_hi = max(0, -dx), size - side - max(0, dx)
    x0 = int(rng.integers(x_lo, x_hi + 1))
    mask = np.zeros((size, size), dtype=bool)
    for y, x in ((y0, x0), (y0 + dy, x0 + dx)):
        mask[y:y + side, x:x + side] = True
    return mask


def render(label: str, size: int, rng: np.random.Generator, noise: float = 12.0) -> np.ndarray:
    """One (size, size, 3) uint8 image of class ``label``."""
    family, kind = label.split("_", 1)
    mask = _stripes(kind, size, rng) if family == "stripes" else _pair(kind, size, rng)
    fg, bg = _colours(rng)
    image = np.where(mask[..., None], fg, bg) + rng.normal(0, noise, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_synthetic_imagefolder(root: Union[str, Path], train_per_class: int = 100, val_per_class: int = 25,
                                size: int = 64, seed: int = 0, classes: tuple[str, ...] = CLASSES) -> Path:
    """Write ``<root>/train/<class>/<i>.png`` and ``<root>/val/<class>/<i>.png``; returns ``root``.

    Deterministic in (``seed``, counts, ``size``). The tree is written to a temporary sibling folder and renamed
    into place, so a reader never sees half a dataset; an existing complete tree at ``root`` is kept as it is.
    """
    from PIL import Image

    root = Path(root)
    if (root / ".complete").exists():
        return root
    for c in classes:
        if c not in CLASSES:
            raise ValueError(f"classes: {c!r} is not a synthetic class; expected some of {', '.join(CLASSES)}")
    tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, count, offset in (("train", train_per_class, 0), ("val", val_per_class, 1)):
        for ci, c in enumerate(classes):
            folder = tmp / split / c
            folder.mkdir(parents=True)
            rng = np.random.default_rng([seed, offset, ci])
            for i in range(count):
                Image.fromarray(render(c, size, rng)).save(folder / f"{i:05d}.png")
    (tmp / ".complete").write_text(f"seed={seed} size={size} train={train_per_class} val={val_per_class}\n")
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, root)
    except OSError:  # another process finished first (or root exists non-empty): keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (root / ".complete").exists():
            raise
    return root
