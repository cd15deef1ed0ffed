"""The synthetic dataset: deterministic, each class has the geometry its name says, colours carry no class."""
from __future__ import annotations

import numpy as np
import pytest

from attnbench.accuracy.synthetic import CLASSES, render, write_synthetic_imagefolder


def two_colour_mask(image: np.ndarray) -> np.ndarray:
    """Noise-free image -> boolean mask of the less frequent colour."""
    flat = image.reshape(-1, 3)
    colours, inverse, counts = np.unique(flat, axis=0, return_inverse=True, return_counts=True)
    assert len(colours) == 2, "a class image has exactly two colours"
    return (inverse.reshape(image.shape[:2]) == np.argmin(counts))


def squares(mask: np.ndarray) -> list[tuple[int, int, int]]:
    """(top, left, side) of the square blobs of ``mask``, found by flood fill."""
    seen, out = np.zeros_like(mask), []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        stack, cells = [(y, x)], []
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            cells.append((cy, cx))
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        ys, xs = zip(*cells)
        side = max(ys) - min(ys) + 1
        assert side == max(xs) - min(xs) + 1 and len(cells) == side * side, "blob is a filled square"
        out.append((min(ys), min(xs), side))
    return sorted(out)


@pytest.mark.parametrize("kind, shift", [("horizontal", (0, 1)), ("vertical", (1, 0)), ("diagonal", (1, -1)),
                                         ("antidiagonal", (1, 1))])
def test_stripes_are_constant_along_their_orientation(kind, shift):
    rng = np.random.default_rng(0)
    dy, dx = shift
    Y, X = np.mgrid[0:32, 0:32]
    inside = (Y + dy >= 0) & (Y + dy < 32) & (X + dx >= 0) & (X + dx < 32)
    for _ in range(20):
        m = two_colour_mask(render(f"stripes_{kind}", 32, rng, noise=0))
        assert (m[Y[inside], X[inside]] == m[Y[inside] + dy, X[inside] + dx]).all()


@pytest.mark.parametrize("kind", ["row", "column", "diagonal", "antidiagonal"])
def test_pairs_are_arranged_as_named(kind):
    rng = np.random.default_rng(1)
    for size in (16, 32, 64):
        for _ in range(20):
            (y1, x1, s1), (y2, x2, s2) = squares(two_colour_mask(render(f"pair_{kind}", size, rng, noise=0)))
            dy, dx = y2 - y1, x2 - x1  # sorted by top then left: dy >= 0
            assert s1 == s2
            assert {"row": dy == 0 and dx > s1, "column": dx == 0 and dy > s1,
                    "diagonal": dy == dx > s1, "antidiagonal": dy == -dx > s1}[kind]


def test_colour_says_nothing_about_the_class():
    """Mean colour per class over many images is the same (the colours are drawn independently of the class)."""
    rng = np.random.default_rng(2)
    means = np.array([np.mean([render(c, 16, rng).reshape(-1, 3).mean(0) for _ in range(300)], axis=0)
                      for c in CLASSES])
    assert np.abs(means - 127.5).max() < 15, means


def test_written_tree_is_deterministic(tmp_path):
    a = write_synthetic_imagefolder(tmp_path / "a", 2, 1, size=16, seed=3)
    b = write_synthetic_imagefolder(tmp_path / "b", 2, 1, size=16, seed=3)
    c = write_synthetic_imagefolder(tmp_path / "c", 2, 1, size=16, seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 8 * 3 and {p.parts[0] for p in files} == {"train", "val"}
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)
