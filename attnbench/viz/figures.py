"""Figures of ``attnbench viz``: all mechanisms side by side at one stage, and one mechanism across the stages."""
from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np

from attentions.inspect import Record

from .draw import draw_agents, draw_erf, draw_mechanism, draw_query_map, draw_routing, draw_sampling

__all__ = ["Column", "side_by_side", "detail", "save"]


@dataclasses.dataclass
class Column:
    """One mechanism of one model: its title, weights line, records per stage and ERF per stage."""

    title: str
    weights: str
    records: dict[int, Record]
    erfs: dict[int, np.ndarray]


def save(fig, out: Path, stem: str, dpi: int = 90) -> list[Path]:
    """``stem``.png (256 colours) and ``stem``.svg in ``out``; closes the figure."""
    import matplotlib.pyplot as plt

    import io

    from PIL import Image

    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    # photographs under overlays compress badly; 256 adaptive colours quarter the file at no visible loss
    Image.open(buf).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(paths[0], optimize=True)
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def _figure(rows: int, cols: int, cell: float = 2.3):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows + 0.6), squeeze=False)
    return fig, axes


def side_by_side(pixels: np.ndarray, columns: list[Column], stage: int, subtitle: str):
    """One column per mechanism at ``stage``: the query's attention, the mechanism's picture, the ERF."""
    cols = [c for c in columns if stage in c.records]
    fig, axes = _figure(3, len(cols))
    for k, col in enumerate(cols):
        rec = col.records[stage]
        draw_query_map(axes[0, k], pixels, rec)
        axes[0, k].set_title(f"{col.title}\n" + textwrap.fill(col.weights, 34), fontsize=7)
        caption = draw_mechanism(axes[1, k], pixels, rec)
        axes[1, k].set_xlabel(caption, fontsize=6.5)
        if stage in col.erfs:
            draw_erf(axes[2, k], pixels, col.erfs[stage])
        else:
            axes[2, k].axis("off")
    for r, name in enumerate(("query's attention\n(mean of heads)", "mechanism", "effective receptive field\n"
                                                                               "(stage centre, ERF)")):
        axes[r, 0].set_ylabel(name, fontsize=8)
    grid = cols[0].records[stage].grid if cols else ("?", "?")
    fig.suptitle(f"stage {stage + 1} ({grid[0]}×{grid[1]} tokens) · {subtitle}", fontsize=9)
    fig.tight_layout()
    return fig


def detail(pixels: np.ndarray, col: Column, subtitle: str, max_heads: int = 4):
    """One row per stage: the query's attention per head, then routing / sampling / agent maps, then the ERF."""
    stages = sorted(col.records)
    rows = []
    for s in stages:
        rec = col.records[s]
        heads = min(rec.data["query_map"].shape[1], max_heads)
        panels = [(f"head {h + 1}: query's attention", lambda ax, rec=rec, h=h: draw_query_map(ax, pixels, rec, h))
                  for h in range(heads)]
        if "routing_index" in rec.data:
            panels.append(("routing (top-k by score)", lambda ax, rec=rec: draw_routing(ax, pixels, rec)))
        if "positions" in rec.data:
            for g in range(min(rec.data["positions"].shape[1], 4)):
                panels.append((f"group {g + 1}: points + offsets",
                               lambda ax, rec=rec, g=g: draw_sampling(ax, pixels, rec, groups=[g])))
        if "agent_to_pixel" in rec.data:
            for rank in range(min(2, rec.data["agent_to_pixel"].shape[2])):
                panels.append((f"agent map (query's #{rank + 1} agent)",
                               lambda ax, rec=rec, rank=rank: draw_agents(ax, pixels, rec, rank)))
        if s in col.erfs:
            panels.append(("ERF", lambda ax, s=s: draw_erf(ax, pixels, col.erfs[s])))
        rows.append((s, panels))
    width = max(len(p) for _, p in rows)
    fig, axes = _figure(len(rows), width)
    for r, (s, panels) in enumerate(rows):
        for k in range(width):
            ax = axes[r, k]
            if k >= len(panels):
                ax.axis("off")
                continue
            title, fn = panels[k]
            fn(ax)
            ax.set_title(title, fontsize=7)
        grid = col.records[s].grid
        axes[r, 0].set_ylabel(f"stage {s + 1}\n{grid[0]}×{grid[1]}", fontsize=8)
    fig.suptitle(f"{col.title} · {col.weights} · {subtitle}", fontsize=9)
    fig.tight_layout()
    return fig
