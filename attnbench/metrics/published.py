"""Metric ``published``: the figures the papers print for the cell's backbone, written into its row.

Nothing is measured: the row gets the ``paper_*`` columns of :mod:`attentions.models.published` (params in M,
GFLOPs = fvcore multiply-adds in G, top-1, throughput and its hardware where published, the source and a note), as
the printed text, so that ``attnbench report`` -- which never imports torch or ``attentions`` -- can set them
beside the measured ones in its paper table. A cell with no published figures (an attention, a swap preset) gets
no columns: the table shows ``—``.
"""
from __future__ import annotations

from typing import Any

from .base import MetricContext

__all__ = ["DEPENDS_ON", "measure"]

#: the figures depend on the model only
DEPENDS_ON = ("attention",)


def measure(ctx: MetricContext) -> dict[str, Any]:
    """The ``paper_*`` columns of a model cell whose model has published figures; ``{}`` otherwise."""
    if ctx.kind != "model":
        return {}
    from attentions.models.published import published

    entry = published(ctx.attention)
    return entry.columns() if entry is not None else {}
