"""ImageFolderSubset on a generated tree: subset selection, labels, caps, transforms, and every error."""
from __future__ import annotations

import re
import shutil

import pytest
import torch

from attnbench.accuracy.data import (DATA_ENV, DataError, ImageFolderSubset, build_transform, read_class_list,
                                     resolve_data_root)

pytest.importorskip("timm", reason="the accuracy extra (timm, torchvision) is not installed")
pytest.importorskip("torchvision", reason="the accuracy extra (timm, torchvision) is not installed")


def test_subset_by_list_gives_sorted_labels(tiny_tree):
    ds = ImageFolderSubset(tiny_tree, "train", ["stripes_vertical", "pair_row"])
    assert ds.classes == ["pair_row", "stripes_vertical"]
    assert len(ds) == 16
    assert [p.parent.name for p, _ in ds.samples] == ["pair_row"] * 8 + ["stripes_vertical"] * 8
    assert ds.targets == [0] * 8 + [1] * 8


def test_cap_keeps_the_first_files_by_name(tiny_tree):
    ds = ImageFolderSubset(tiny_tree, "val", None, max_per_class=3)
    assert len(ds.classes) == 8 and len(ds) == 24
    per_class = [[p.name for p, y in ds.samples if y == c] for c in range(8)]
    assert all(names == ["00000.png", "00001.png", "00002.png"] for names in per_class)


def test_subset_file_with_comments(tiny_tree, tmp_path):
    listing = tmp_path / "mine.txt"
    listing.write_text("# two classes\npair_column   # stacked squares\n\nstripes_diagonal\n")
    ds = ImageFolderSubset(tiny_tree, "train", str(listing))
    assert ds.classes == ["pair_column", "stripes_diagonal"]


@pytest.mark.parametrize("name, n, first", [("imagenette", 10, "n01440764"), ("imagenet100", 100, "n02869837")])
def test_shipped_class_lists(name, n, first):
    classes = read_class_list(name)
    assert len(classes) == n == len(set(classes)) and classes[0] == first
    assert all(re.fullmatch(r"n\d{8}", c) for c in classes)


def test_item_is_a_transformed_image(tiny_tree):
    for augment, training in (("none", True), ("imagenet", False), ("imagenet", True)):
        ds = ImageFolderSubset(tiny_tree, "val", ["pair_row"], transform=build_transform(training, 24, augment))
        image, label = ds[0]
        assert image.shape == (3, 24, 24) and image.dtype == torch.float32 and label == 0


def test_root_from_argument_or_environment(tiny_tree, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(DataError, match=f"no data root.*{DATA_ENV}"):
        resolve_data_root(None)
    monkeypatch.setenv(DATA_ENV, str(tiny_tree))
    assert resolve_data_root(None) == tiny_tree
    assert resolve_data_root(str(tiny_tree)) == tiny_tree


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nowhere")) + ".*train/<wnid>"):
        resolve_data_root(tmp_path / "nowhere")


def test_missing_split_and_empty_tree(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "val")) + "' does not exist"):
        ImageFolderSubset(tmp_path, "val")
    with pytest.raises(DataError, match="holds no class folders"):
        ImageFolderSubset(tmp_path, "train")


def test_no_matching_classes_says_what_was_looked_for_where(tiny_tree):
    with pytest.raises(DataError) as err:
        ImageFolderSubset(tiny_tree, "train", "imagenette")
    text = str(err.value)
    assert "none of the 10 classes of subset 'imagenette'" in text and str(tiny_tree / "train") in text
    assert "n01440764" in text and "found 8 folders: pair_antidiagonal" in text


def test_partly_missing_subset_is_an_error(tiny_tree):
    with pytest.raises(DataError, match="1 of the 2 classes .* missing .*: n01440764"):
        ImageFolderSubset(tiny_tree, "train", ["pair_row", "n01440764"])


def test_class_without_images(tiny_tree, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_tree, root)
    for f in (root / "train" / "pair_row").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="pair_row holds no images"):
        ImageFolderSubset(root, "train")


def test_bad_subset_and_cap(tiny_tree):
    with pytest.raises(DataError, match="not a known subset"):
        read_class_list("imagenet-1k")
    with pytest.raises(DataError, match="max_per_class=0"):
        ImageFolderSubset(tiny_tree, "train", max_per_class=0)
