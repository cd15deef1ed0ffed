"""Panels: one function per picture, each drawing on a matplotlib ``Axes`` over the image and returning what it
placed (boxes, points), so that tests can check the drawing against the record.
"""
from __future__ import annotations

import numpy as np

from attentions.inspect import Record

from .geometry import Box, agent_points, query_point, routing_boxes, sampling_points, upsample

__all__ = ["draw_image", "draw_query_map", "draw_routing", "draw_sampling", "draw_agents", "draw_erf", "draw_mass",
           "draw_mechanism", "GROUP_COLOURS"]

GROUP_COLOURS = ("#00e5ff", "#ffea00", "#ff4081", "#76ff03", "#ff9100", "#d500f9", "#ffffff", "#1de9b6")


def draw_image(ax, pixels: np.ndarray, dim: bool = False) -> None:
    S = pixels.shape[0]
    ax.imshow(pixels if not dim else (pixels * 0.55).astype(np.uint8), extent=(0, S, S, 0), interpolation="nearest")
    ax.set_xlim(0, S)
    ax.set_ylim(S, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def _mark_query(ax, rec: Record, size: int) -> None:
    y, x = query_point(rec, size)
    ax.plot([x], [y], marker="*", markersize=11, color="#00e5ff", markeredgecolor="black", markeredgewidth=0.8)


def _overlay(ax, field: np.ndarray, size: int, cmap: str = "inferno", alpha: float = 0.85) -> None:
    """``field`` in [0, 1] over the image; low values stay transparent so the photo shows through."""
    ax.imshow(field, extent=(0, size, size, 0), cmap=cmap, alpha=alpha * np.sqrt(np.clip(field, 0, 1)), vmin=0.0,
              vmax=1.0, interpolation="nearest")


def draw_query_map(ax, pixels: np.ndarray, rec: Record, head: int | None = None, log: bool = False,
                   batch: int = 0) -> np.ndarray:
    """The chosen query's weights over the tokens (mean over heads, or one head), as a heat map; returns it (H, W)."""
    S = pixels.shape[0]
    qmap = rec.data["query_map"][batch]
    field = (qmap.mean(0) if head is None else qmap[head]).numpy()
    shown = np.log10(1 + 1e3 * field / max(field.max(), 1e-30)) / 3 if log else field / max(field.max(), 1e-30)
    draw_image(ax, pixels, dim=True)
    _overlay(ax, upsample(shown, S), S)
    _mark_query(ax, rec, S)
    return field


def draw_routing(ax, pixels: np.ndarray, rec: Record, batch: int = 0) -> list[Box]:
    """The query's region (cyan outline) and its top-k routed regions, shaded by routing score, ranks written."""
    from matplotlib.patches import Rectangle

    S = pixels.shape[0]
    boxes = routing_boxes(rec, S, batch)
    draw_image(ax, pixels, dim=True)
    routed = [b for b in boxes if b.rank >= 0]
    scores = np.array([b.score for b in routed])
    span = float(scores.max() - scores.min()) if len(scores) else 0.0
    for b in routed:
        strength = 1.0 if span == 0 else (b.score - scores.min()) / span
        ax.add_patch(Rectangle((b.left, b.top), b.width, b.height, facecolor="#ffea00",
                               alpha=0.15 + 0.45 * strength, edgecolor="#ffea00", linewidth=1.0))
        if len(routed) <= 16:
            ax.text(b.left + b.width / 2, b.top + b.height / 2, str(b.rank + 1), ha="center", va="center",
                    fontsize=7, color="black")
    q = boxes[0]
    ax.add_patch(Rectangle((q.left, q.top), q.width, q.height, fill=False, edgecolor="#00e5ff", linewidth=2.0))
    _mark_query(ax, rec, S)
    return boxes


def _query_weights(rec: Record, batch: int = 0) -> np.ndarray | None:
    """Per sampled point / agent, the chosen query's attention weight (mean over heads), or None."""
    d = rec.data
    H, W = tuple(d.get("padded_grid", rec.grid))
    i, j = rec.query_pixel
    for key in ("sample_weights", "pixel_to_agent"):
        if key in d:
            return d[key][batch, :, i * W + j].mean(0).numpy()
    return None


def draw_sampling(ax, pixels: np.ndarray, rec: Record, groups: list[int] | None = None, batch: int = 0,
                  background: bool = True):
    """Reference points (hollow), sampled positions (filled, sized by the query's weight) and offset arrows,
    one colour per offset group; returns [(reference, positions)] of the groups drawn, in image pixels."""
    S = pixels.shape[0]
    per_group = sampling_points(rec, S, batch)
    groups = list(range(len(per_group))) if groups is None else groups
    if background:
        draw_image(ax, pixels, dim=True)
    weights = _query_weights(rec, batch)
    drawn = []
    for g in groups:
        ref, pos = per_group[g]
        colour = GROUP_COLOURS[g % len(GROUP_COLOURS)]
        sizes = 8.0
        if weights is not None and len(weights) == len(pos):
            sizes = 2 + 40 * weights / max(weights.max(), 1e-30)
        ax.scatter(ref[:, 1], ref[:, 0], s=4, facecolors="none", edgecolors=colour, linewidths=0.5)
        ax.quiver(ref[:, 1], ref[:, 0], pos[:, 1] - ref[:, 1], pos[:, 0] - ref[:, 0], angles="xy",
                  scale_units="xy", scale=1, color=colour, width=0.003, headwidth=3, alpha=0.8)
        ax.scatter(pos[:, 1], pos[:, 0], s=sizes, color=colour, edgecolors="black", linewidths=0.3, zorder=3)
        drawn.append((ref, pos))
    _mark_query(ax, rec, S)
    return drawn


def draw_agents(ax, pixels: np.ndarray, rec: Record, rank: int = 0, batch: int = 0) -> int:
    """The agent the query weighs most (``rank`` 0; 1 = second ...): its attention over the pixels as a heat map,
    the agents as dots sized by the query's weight on them; returns the agent's index."""
    S = pixels.shape[0]
    d = rec.data
    Hp, Wp = tuple(d.get("padded_grid", rec.grid))
    weights = _query_weights(rec, batch)
    agent = int(np.argsort(-weights)[rank])
    a2p = d["agent_to_pixel"][batch, :, agent].mean(0).numpy().reshape(Hp, Wp)[: rec.grid[0], : rec.grid[1]]
    draw_image(ax, pixels, dim=True)
    _overlay(ax, upsample(a2p / max(a2p.max(), 1e-30), S), S, cmap="viridis")
    if rec.mechanism == "agent":
        pts = agent_points(rec, S)
    else:
        pts = np.concatenate([pos for _, pos in sampling_points(rec, S, batch)[:1]])  # group 0's agents
    if len(pts) == len(weights):
        ax.scatter(pts[:, 1], pts[:, 0], s=6 + 120 * weights / max(weights.max(), 1e-30), color="#ff4081",
                   edgecolors="white", linewidths=0.5, zorder=3)
        ax.scatter([pts[agent, 1]], [pts[agent, 0]], s=90, facecolors="none", edgecolors="white", linewidths=1.5,
                   zorder=4)
    _mark_query(ax, rec, S)
    return agent


def draw_erf(ax, pixels: np.ndarray, field: np.ndarray) -> None:
    """An effective receptive field (S, S) in [0, 1] (square-root scale, so that the tails show)."""
    S = pixels.shape[0]
    draw_image(ax, pixels, dim=True)
    _overlay(ax, np.sqrt(np.clip(field, 0, 1)), S, cmap="magma")


def draw_mass(ax, pixels: np.ndarray, rec: Record, share: float = 0.5, batch: int = 0) -> int:
    """The fewest tokens that hold ``share`` of the query's attention (mean of heads); returns their number."""
    S = pixels.shape[0]
    field = rec.data["query_map"][batch].mean(0).numpy()
    order = np.argsort(-field, axis=None)
    count = int(np.searchsorted(np.cumsum(field.flat[order]), share * field.sum()) + 1)
    mask = np.zeros(field.size)
    mask[order[:count]] = 1.0
    draw_image(ax, pixels, dim=True)
    _overlay(ax, upsample(mask.reshape(field.shape), S), S, cmap="cool", alpha=0.6)
    _mark_query(ax, rec, S)
    return count


def draw_mechanism(ax, pixels: np.ndarray, rec: Record) -> str:
    """The picture that explains ``rec``'s mechanism; returns its caption."""
    if rec.mechanism == "bra":
        draw_routing(ax, pixels, rec)
        return f"routed regions (top-{rec.data['routing_index'].shape[-1]}, by score)"
    if rec.mechanism == "dbra":
        draw_routing(ax, pixels, rec)
        draw_sampling(ax, pixels, rec, background=False)
        return "agents: offsets; their region's routing"
    if rec.mechanism == "dat":
        draw_sampling(ax, pixels, rec)
        return "sampling points and offsets"
    if rec.mechanism == "agent":
        draw_agents(ax, pixels, rec)
        return "agents; the query's top agent's map"
    count = draw_mass(ax, pixels, rec)
    return f"{count} of {rec.grid[0] * rec.grid[1]} tokens hold half"
