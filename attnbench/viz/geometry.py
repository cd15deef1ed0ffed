"""Records -> image coordinates: what the drawings put where (pure numpy, so tests can check it exactly).

An S×S image is cut into the H×W token grid of a stage: token (i, j) covers image pixels [i·S/H, (i+1)·S/H) ×
[j·S/W, (j+1)·S/W), and its centre is ((i + ½)·S/H, (j + ½)·S/W). A normalised grid_sample coordinate p (align
corners, as the zoo samples) lies at token (p + 1)/2·(H − 1). Coordinates are (y, x) in image pixels, matching
``imshow(extent=(0, S, S, 0))``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from attentions.inspect import Record

__all__ = ["Box", "routing_boxes", "sampling_points", "agent_points", "token_centre", "norm_to_image",
           "upsample", "query_point"]


@dataclasses.dataclass(frozen=True)
class Box:
    """A region of the image: (top, left, height, width) in pixels, its region index, rank and score."""

    top: float
    left: float
    height: float
    width: float
    region: int
    rank: int = -1  # -1: the query region; 0..topk-1: routed, best first
    score: float = 0.0


def token_centre(i: float, j: float, grid: tuple[int, int], size: int) -> tuple[float, float]:
    H, W = grid
    return (i + 0.5) * size / H, (j + 0.5) * size / W


def query_point(rec: Record, size: int) -> tuple[float, float]:
    """The chosen query token's centre in image pixels."""
    return token_centre(*rec.query_pixel, rec.grid, size)


def norm_to_image(pos: np.ndarray, grid: tuple[int, int], size: int) -> np.ndarray:
    """(..., 2) normalised (y, x) on an H×W grid (align_corners) -> (..., 2) image pixels."""
    pos = np.asarray(pos, dtype=np.float64)
    H, W = grid
    ty = (pos[..., 0] + 1) / 2 * (H - 1)
    tx = (pos[..., 1] + 1) / 2 * (W - 1)
    return np.stack([(ty + 0.5) * size / H, (tx + 0.5) * size / W], -1)


def _region_box(region: int, n_win: int, grid: tuple[int, int], size: int) -> tuple[float, float, float, float]:
    """A region of an n_win×n_win cut of the (possibly padded) grid, clipped to the image."""
    H, W = grid
    ri, rj = divmod(region, n_win)
    h, w = H // n_win, W // n_win
    top, left = ri * h * size / H, rj * w * size / W
    return top, left, h * size / H, w * size / W


def routing_boxes(rec: Record, size: int, batch: int = 0) -> list[Box]:
    """The query's region (rank -1) and its routed regions (rank 0 = best) with their routing scores.

    The query region is the region of the chosen query token: for bra the pixel region, for dbra the agent region
    in the same window of the image (agent and pixel grids are cut into the same n_win×n_win windows). Boxes are
    drawn on the key grid (the pixels); with ``auto_pad`` the padded grid extends past the image and boxes are
    in padded-grid units scaled like the image.
    """
    d = rec.data
    n = int(d["n_win"])
    key_grid = tuple(d["key_grid"])
    i, j = rec.query_pixel
    H, W = rec.grid
    Hp, Wp = key_grid  # the padded grid (auto_pad): regions are Hp/n tokens tall, tokens keep their image size
    r = (i // (Hp // n)) * n + j // (Wp // n)
    scale_grid, image_side = key_grid, size * Hp / H
    boxes = [Box(*_region_box(r, n, scale_grid, image_side), region=r)]
    idx = d["routing_index"][batch, r].tolist()
    scores = d["routing_scores"][batch, r].tolist()
    for rank, (region, score) in enumerate(zip(idx, scores)):
        boxes.append(Box(*_region_box(region, n, scale_grid, image_side), region=region, rank=rank, score=score))
    return boxes


def sampling_points(rec: Record, size: int, batch: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per offset group: (reference points, sampled positions), each (Hk·Wk, 2) image pixels (y, x).

    The positions live in the normalised coordinates of the grid the module sampled from: the token grid (dat),
    the padded token grid (dbra with auto_pad).
    """
    d = rec.data
    grid = tuple(d.get("padded_grid", rec.grid))
    side = size * grid[0] / rec.grid[0]
    out = []
    for g in range(d["positions"].shape[1]):
        ref = norm_to_image(d["reference"][batch, g].numpy().reshape(-1, 2), grid, side)
        pos = norm_to_image(d["positions"][batch, g].numpy().reshape(-1, 2), grid, side)
        out.append((ref, pos))
    return out


def agent_points(rec: Record, size: int) -> np.ndarray:
    """Agent attention: the centres of the pooled cells the agents average, (n, 2) image pixels."""
    c = rec.data["agent_centres"].numpy()
    return np.stack([token_centre(y, x, rec.grid, size) for y, x in c]) if len(c) else np.zeros((0, 2))


def upsample(grid_map: np.ndarray, size: int) -> np.ndarray:
    """An (H, W) token map as an (S, S) image map (each token a constant block, as the tokens cover the image)."""
    H, W = grid_map.shape
    rows = np.minimum((np.arange(size) * H) // size, H - 1)
    cols = np.minimum((np.arange(size) * W) // size, W - 1)
    return grid_map[np.ix_(rows, cols)]
