"""Write a small ImageNet-layout folder (``train/<class>/*.png``, ``val/<class>/*.png``) from Fashion-MNIST.

Fashion-MNIST (Zalando; 28x28 grayscale, 10 classes of clothing) is a real, freely licensed dataset that Debian ships
as a package, so an accuracy suite can be run on real images on a machine with no other data and no internet:

    apt-get install -y dataset-fashion-mnist          # IDX files under /usr/share/datasets/fashion-mnist
    python3 scripts/fashion_mnist_folders.py data/fashion --train-per-class 100 --val-per-class 50
    ATTNBENCH_DATA=data/fashion python3 -m attnbench run suites/dbra_ablation_accuracy.yaml

The first ``--train-per-class`` images of each class in the training file and the first ``--val-per-class`` of
each class in the test file are written (deterministic: the files' own order), as 8-bit grayscale PNGs; the
accuracy loader converts them to RGB and resizes them to the suite's ``img_size``. Class folders are named
``<index>_<name>`` (``0_tshirt_top`` ... ``9_ankle_boot``), so their sorted order is the dataset's label order.
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

#: the dataset's labels 0-9, as folder-name-safe words
CLASSES = ("tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")
#: (split folder, images file, labels file) of the IDX files
SPLITS = (("train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          ("val", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: big-endian magic with the dtype and rank, the sizes, then the data)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, rank = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    shape = struct.unpack(f">{rank}I", data[4:4 + 4 * rank])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(shape)


def write_folders(out: Path, source: Path = DEFAULT_SOURCE, train_per_class: int = 100,
                  val_per_class: int = 50) -> dict[str, int]:
    """Write the subset into ``out`` (replaced atomically: built in a sibling temporary folder, then renamed);
    returns images written per split."""
    from PIL import Image

    out = Path(out)
    missing = [source / f for _, images, labels in SPLITS for f in (images, labels) if not (source / f).is_file()]
    if missing:
        raise SystemExit(f"{missing[0]}: not found; install it with `apt-get install -y dataset-fashion-mnist` "
                         "or pass --source DIR holding the four IDX files")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    counts = {}
    for split, images_file, labels_file in SPLITS:
        images, labels = read_idx(source / images_file), read_idx(source / labels_file)
        per_class = train_per_class if split == "train" else val_per_class
        counts[split] = 0
        for label, name in enumerate(CLASSES):
            folder = tmp / split / f"{label}_{name}"
            folder.mkdir(parents=True)
            for i in np.flatnonzero(labels == label)[:per_class]:
                Image.fromarray(images[i]).save(folder / f"{split}_{i:05d}.png")
                counts[split] += 1
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder to write (replaced if it exists)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of the four IDX .gz files")
    parser.add_argument("--train-per-class", type=int, default=100)
    parser.add_argument("--val-per-class", type=int, default=50)
    args = parser.parse_args(argv)
    counts = write_folders(args.out, args.source, args.train_per_class, args.val_per_class)
    print(f"{args.out}: {counts['train']} training and {counts['val']} validation images, {len(CLASSES)} classes")


if __name__ == "__main__":
    main()
