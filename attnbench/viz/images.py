"""Images for ``attnbench viz``: files, folders, or the photographs scikit-image ships (``skimage:astronaut``).

Every image is centre-cropped to a square and resized to the model's input side, then normalised with the
ImageNet mean and std (the recipe's transforms, :func:`attnbench.accuracy.data.build_transform`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.errors import UserError

__all__ = ["VizImage", "load_images", "SKIMAGE_PHOTOS", "IMAGE_SUFFIXES"]

#: colour photographs in ``skimage.data`` that need no download
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "cat")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # timm IMAGENET_DEFAULT_MEAN / STD
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclasses.dataclass
class VizImage:
    """One input: ``pixels`` (D, D, 3) uint8 to draw on (D >= S, for legible drawings), ``tensor`` (3, S, S) float32
    normalised for the model. Drawings place tokens by fractions of the image, so D and S may differ."""

    name: str
    pixels: np.ndarray
    tensor: "object"


def _skimage(name: str) -> np.ndarray:
    try:
        import skimage.data
    except ImportError as e:
        raise UserError("images 'skimage:…' need scikit-image: pip install 'attnbench[viz]'") from e
    if name not in SKIMAGE_PHOTOS:
        raise UserError(f"image 'skimage:{name}' is not one of the shipped photos: expected one of "
                        f"{', '.join('skimage:' + n for n in SKIMAGE_PHOTOS)}")
    return getattr(skimage.data, name)()


def _files(spec: str) -> list[Path]:
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"image folder {path}: no image files in it (expected {', '.join(IMAGE_SUFFIXES)})")
        return files
    if not path.exists():
        raise UserError(f"image {spec}: no such file or folder (or use skimage:NAME, e.g. skimage:astronaut)")
    return [path]


def _square(rgb: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(rgb[top:top + s, left:left + s])
    return np.asarray(crop.resize((size, size), Image.BICUBIC))


def _rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.stack([array] * 3, -1)
    return np.ascontiguousarray(array[..., :3]).astype(np.uint8)


def load_images(specs: Sequence[str], size: int, limit: int | None = None, display: int = 256) -> list[VizImage]:
    """The images of ``specs`` (files, folders, ``skimage:NAME``) as squares of side ``size`` for the model and
    ``max(size, display)`` for drawing."""
    import torch
    from PIL import Image, UnidentifiedImageError

    out: list[VizImage] = []
    for spec in specs:
        if spec.startswith("skimage:"):
            items = [(spec, _rgb(_skimage(spec.split(":", 1)[1])))]
        else:
            items = []
            for f in _files(spec):
                try:
                    items.append((f.stem, _rgb(np.asarray(Image.open(f).convert("RGB")))))
                except (UnidentifiedImageError, OSError) as e:
                    raise UserError(f"image {f}: cannot be read as an image ({e})") from e
        for name, rgb in items:
            model_px = _square(rgb, size)
            norm = (model_px.astype(np.float32) / 255.0 - _MEAN) / _STD
            pixels = model_px if display <= size else _square(rgb, display)
            out.append(VizImage(name, pixels, torch.from_numpy(norm.transpose(2, 0, 1).copy())))
            if limit is not None and len(out) >= limit:
                return out
    if not out:
        raise UserError("no images given")
    return out
