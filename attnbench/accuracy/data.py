"""ImageNet-layout image folders with a named class subset, a per-class cap and the standard transforms.

A tree ``<root>/train/<wnid>/*.JPEG`` and ``<root>/val/<wnid>/*.JPEG`` (the layout torchvision's ``ImageFolder``
and timm read; the validation images must be sorted into class folders). A subset is a name (``imagenette``,
``imagenet100``: files in ``attnbench/accuracy/classes/``), a path to a text file of wnids (one per line, ``#``
comments), a list of wnids, or ``None``/``"all"`` for every class folder present. Labels are the sorted wnids'
indices, so a subset gives the same labels whatever else the tree holds.

The root comes from the caller (suite ``settings.accuracy.data_root``, ``--data``) or from ``ATTNBENCH_DATA``.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from torch.utils.data import Dataset

__all__ = ["DataError", "ImageFolderSubset", "SUBSETS", "read_class_list", "resolve_data_root", "build_transform",
           "IMG_EXTENSIONS", "DATA_ENV", "split_classes", "check_data"]

DATA_ENV = "ATTNBENCH_DATA"
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
#: subset name -> class-list file in attnbench/accuracy/classes/
SUBSETS = {"imagenette": "imagenette.txt", "imagenet100": "imagenet100.txt"}

Subset = Union[None, str, Path, Sequence[str]]


class DataError(ValueError):
    """The data root, tree or class subset is not usable; the message says what was looked for where."""


def read_class_list(subset: Subset) -> Optional[list[str]]:
    """The wnids of ``subset`` (see the module docstring); ``None`` means every class folder present."""
    if subset is None or subset == "all":
        return None
    if isinstance(subset, (list, tuple)):
        return [str(c) for c in subset]
    if str(subset) in SUBSETS:
        text = resources.files("attnbench.accuracy").joinpath("classes", SUBSETS[str(subset)]).read_text()
    else:
        path = Path(subset)
        if not path.is_file():
            raise DataError(f"subset={str(subset)!r}: not a known subset ({', '.join(SUBSETS)}, all) "
                            f"and not a class-list file")
        text = path.read_text()
    classes = [line.split("#")[0].strip() for line in text.splitlines()]
    classes = [c for c in classes if c]
    if not classes:
        raise DataError(f"subset={str(subset)!r}: the class list is empty")
    return classes


def resolve_data_root(root: Union[str, Path, None]) -> Path:
    """``root`` if given, else ``$ATTNBENCH_DATA``; neither, or a path that is not a directory, raises."""
    if root is None or str(root) == "":
        root = os.environ.get(DATA_ENV)
        if not root:
            raise DataError(f"no data root: give settings.accuracy.data_root in the suite, --data on the command "
                            f"line, or set {DATA_ENV} to a directory holding train/<wnid>/ and val/<wnid>/")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data root {str(path)!r} does not exist or is not a directory "
                        f"(expected an ImageNet-layout tree: {path}/train/<wnid>/*.JPEG, {path}/val/<wnid>/*.JPEG)")
    return path


def split_classes(root: Path, split: str, subset: Subset) -> list[str]:
    """The sorted wnids of ``subset`` (every class folder when None/"all") in ``root/split``, after checking the
    split folder exists, holds class folders and holds every class of the subset; reads no image.

    Raises:
        DataError: one line naming the folder, the subset and what is missing.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise DataError(f"split folder {str(folder)!r} does not exist: expected {root}/{split}/<wnid>/ "
                        "holding the images of each class")
    present = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not present:
        raise DataError(f"{folder} holds no class folders: expected {folder}/<wnid>/*.JPEG")
    wanted = read_class_list(subset)
    classes = sorted(set(wanted)) if wanted is not None else present
    missing = [c for c in classes if c not in set(present)]
    if not missing:
        return classes
    name = subset if isinstance(subset, (str, Path)) else f"a list of {len(classes)} classes"
    found = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
    if len(missing) == len(classes):
        raise DataError(f"none of the {len(classes)} classes of subset {str(name)!r} is in {folder} "
                        f"(looked for {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}; "
                        f"found {len(present)} folders: {found})")
    raise DataError(f"{len(missing)} of the {len(classes)} classes of subset {str(name)!r} are missing "
                    f"from {folder}: {', '.join(missing[:10])}{', ...' if len(missing) > 10 else ''}")


def check_data(root: Union[str, Path, None], subset: Subset, splits: Sequence[str] = ("train", "val")) -> Path:
    """What a training job will read, checked before any is started: the root (or ``$ATTNBENCH_DATA``), each split
    folder and the subset's classes in each; the resolved root. Raises :class:`DataError` (one line)."""
    path = resolve_data_root(root)
    for split in splits:
        split_classes(path, split, subset)
    return path


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


class ImageFolderSubset(Dataset):
    """The images of ``<root>/<split>/<wnid>/`` for the wnids of a subset, at most ``max_per_class`` each.

    Args:
        root: the dataset root (holding ``train/`` and ``val/``).
        split: ``"train"`` or ``"val"`` (any folder name under the root).
        classes: a subset (see :func:`read_class_list`); every listed wnid must be present.
        max_per_class: keep the first N images of each class in file-name order (``None``: all).
        transform: applied to the RGB PIL image.

    Raises:
        DataError: missing split folder, no class folders, subset classes missing, or a class with no images;
            the message names the folder, the subset and what was found there.
    """

    def __init__(self, root: Union[str, Path], split: str = "train", classes: Subset = None,
                 max_per_class: Optional[int] = None, transform: Optional[Callable] = None):
        if max_per_class is not None and max_per_class < 1:
            raise DataError(f"max_per_class={max_per_class!r} is not allowed: expected a positive integer or None")
        self.root, self.split, self.transform = Path(root), split, transform
        folder = self.root / split
        self.classes = split_classes(self.root, split, classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        for c in self.classes:
            files = _image_files(folder / c)
            if not files:
                raise DataError(f"{folder / c} holds no images (looked for {', '.join(IMG_EXTENSIONS)})")
            self.samples += [(f, self.class_to_idx[c]) for f in files[:max_per_class]]

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as im:
            image = im.convert("RGB")
        return (self.transform(image) if self.transform is not None else image), label


def build_transform(is_training: bool, img_size: int, augment: str = "imagenet",
                    randaugment: Optional[str] = None, reprob: float = 0.0, crop_pct: float = 0.875):
    """The image transform of the recipe.

    ``augment="imagenet"``: timm's ``create_transform``: training = RandomResizedCrop(scale 0.08-1, bicubic) +
    horizontal flip + optional RandAugment (``randaugment``, e.g. ``"rand-m9-mstd0.5-inc1"``) + optional random
    erasing (``reprob``); evaluation = resize to ``img_size / crop_pct`` + center crop. ``augment="none"``: resize
    to ``img_size``² for both (the synthetic data, whose labels depend on position and orientation).
    Both normalise with the ImageNet mean and std.
    """
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
    from torchvision import transforms

    if augment == "none":
        return transforms.Compose([
            transforms.Resize((img_size, img_size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
        ])
    if augment != "imagenet":
        raise DataError(f"augment={augment!r} is not allowed: expected 'imagenet' or 'none'")
    if is_training:
        return create_transform(img_size, is_training=True, auto_augment=randaugment, re_prob=reprob,
                                interpolation="bicubic")
    return create_transform(img_size, is_training=False, interpolation="bicubic", crop_pct=crop_pct)
