"""``attnbench viz`` end to end: models and images in, figures (PNG + SVG), ``index.html`` and ``viz.json`` out."""
from __future__ import annotations

import datetime
import json
import platform
import time
from pathlib import Path
from typing import Optional, Sequence

from ..core.errors import UserError
from .capture import capture, erf, num_stages
from .figures import Column, detail, save, side_by_side
from .images import VizImage
from .page import write_page
from .weights import ModelSource

__all__ = ["render"]


def _columns(sources: Sequence[ModelSource], image: VizImage, images: list[VizImage], query, stages, slot,
             with_erf: bool) -> list[Column]:
    import torch

    batch = torch.stack([im.tensor for im in images]) if with_erf else None  # --erf-images 0: no ERF
    columns = []
    for src in sources:
        by_stage = capture(src.model, image.tensor, query, slot)
        mechanisms = list(dict.fromkeys(m for s in sorted(by_stage) for m in by_stage[s]))  # first-seen order
        fields = {s: erf(src.model, batch, s) for s in stages} if with_erf else {}
        for mech in mechanisms:
            title = mech if mech == src.label else f"{src.label}: {mech}"
            records = {s: by_stage[s][mech] for s in stages if mech in by_stage.get(s, {})}
            columns.append(Column(title, src.weights, records, fields))
    return columns


def render(sources: Sequence[ModelSource], images: list[VizImage], out: Path, query=(0.5, 0.5),
           stages: Optional[Sequence[int]] = None, slot: str = "last", erf_images: int = 16, dpi: int = 90,
           command: str = "") -> list[Path]:
    """Draw every figure for ``sources`` on ``images[0]`` (ERFs averaged over up to ``erf_images`` images).

    Args:
        stages: 0-based stage indices (default: all).
        slot: which attention slot of a stage to show: its ``first`` or ``last`` (default, the deepest).
        dpi: resolution of the PNG files.
    Returns:
        the files written.
    """
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    n = min(num_stages(s.model) for s in sources)
    stages = list(range(n)) if stages is None else list(stages)
    bad = [s + 1 for s in stages if not 0 <= s < n]
    if bad:
        raise UserError(f"--stage {', '.join(map(str, bad))}: the models have stages 1..{n}")
    image = images[0]
    size = int(image.tensor.shape[-1])
    columns = _columns(sources, image, images[:max(erf_images, 0)], query, stages, slot, erf_images > 0)
    subtitle = f"image {image.name}, {size}² input, query (y, x) = ({query[0]:.2f}, {query[1]:.2f})"
    written, figures = [], []
    for s in stages:
        paths = save(side_by_side(image.pixels, columns, s, subtitle), out, f"side_by_side_stage{s + 1}", dpi)
        written += paths
        figures.append((paths[1].name, f"All mechanisms side by side, stage {s + 1} ({slot} attention slot)"))
    for col in columns:
        stem = "detail_" + "".join(ch if ch.isalnum() else "_" for ch in col.title)
        paths = save(detail(image.pixels, col, subtitle), out, stem, dpi)
        written += paths
        figures.append((paths[1].name, f"{col.title}: per head, routing / sampling / agents, ERF, every stage"))
    seconds = time.perf_counter() - t0
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"command: {command}" if command else "", "weights: " + "; ".join(f"{s.label}: {s.weights}"
                                                                                for s in sources),
             f"images: {', '.join(im.name for im in images)} (ERF over {min(len(images), erf_images)})",
             f"{now}, {platform.processor() or platform.machine()}, {seconds:.1f} s"]
    written.append(write_page(out, "attnbench viz", [x for x in lines if x], figures))
    meta = {"command": command, "date": now, "seconds": round(seconds, 2), "query": list(query),
            "size": size, "images": [im.name for im in images], "stages": [s + 1 for s in stages], "slot": slot,
            "sources": [{"label": s.label, "weights": s.weights, "img_size": s.img_size} for s in sources],
            "figures": [f for f, _ in figures]}
    (out / "viz.json").write_text(json.dumps(meta, indent=1))
    written.append(out / "viz.json")
    return written
