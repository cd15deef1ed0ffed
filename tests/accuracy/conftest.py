"""A tiny synthetic ImageFolder shared by the accuracy tests (8 classes, 32², 8 train + 4 val images each)."""
from __future__ import annotations

import pytest

from attnbench.accuracy.synthetic import write_synthetic_imagefolder


@pytest.fixture(scope="session")
def tiny_tree(tmp_path_factory):
    return write_synthetic_imagefolder(tmp_path_factory.mktemp("acc") / "synthetic", train_per_class=8,
                                       val_per_class=4, size=32, seed=0)

