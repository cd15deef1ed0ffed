"""Data checked at plan time (issue 19, item 5): with class folders that are not ImageNet ids, the default
`subset: imagenette` matched nothing, `--dry-run` said nothing, and every cell failed at run time with exit 0."""
from __future__ import annotations

import shutil

import pytest
import yaml
from click.testing import CliRunner

from attnbench.cli import main


def accuracy_suite(tmp_path, **accuracy) -> str:
    data = {"name": "acc", "attentions": [{"name": "mhsa"}], "defaults": {"dim": 64, "num_heads": 2},
            "axes": {"resolution": [8], "device": ["cpu"]}, "metrics": ["accuracy"],
            "settings": {"accuracy": {"img_size": 32, "macro": "tiny", **accuracy}}}
    path = tmp_path / "acc.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def dry_run(path: str):
    return CliRunner().invoke(main, ["run", path, "--dry-run"])


def test_a_wrong_subset_fails_dry_run_with_one_line(tmp_path, tiny_tree):
    result = dry_run(accuracy_suite(tmp_path, data_root=str(tiny_tree)))  # the default subset: imagenette
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {tmp_path / 'acc.yaml'}: settings.accuracy: none of the 10 classes of subset "
                               f"'imagenette' is in {tiny_tree / 'train'}")
    assert "found 8 folders: pair_antidiagonal" in lines[0]


@pytest.mark.parametrize("what, expected", [
    ("root", "data root {root!r} does not exist or is not a directory"),
    ("val", "split folder '{root}/val' does not exist"),
    ("class", "1 of the 8 classes of subset 'a list of 8 classes' are missing from {root}/val: pair_row"),
])
def test_missing_root_split_or_class_is_named(tmp_path, tiny_tree, what, expected):
    root = tmp_path / "data"
    shutil.copytree(tiny_tree, root)
    classes = sorted(d.name for d in (root / "train").iterdir())
    if what == "root":
        root = tmp_path / "nowhere"
    elif what == "val":
        shutil.rmtree(root / "val")
    else:
        shutil.rmtree(root / "val" / "pair_row")
    result = dry_run(accuracy_suite(tmp_path, data_root=str(root), subset=classes))
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert expected.format(root=str(root)) in result.output


def test_a_good_tree_and_synthetic_data_pass(tmp_path, tiny_tree):
    result = dry_run(accuracy_suite(tmp_path, data_root=str(tiny_tree), subset="all"))
    assert result.exit_code == 0 and "1 cells to run" in result.output, result.output
    assert dry_run(accuracy_suite(tmp_path, synthetic=True)).exit_code == 0
