"""The backbones' published figures, as printed, with where each comes from: what the model suite compares against.

Every figure is kept as the text the source prints (``"21.4"``, ``"44"``), because "matches to the printed digit"
depends on how many digits were printed. ``gflops`` is the sources' "FLOPs": fvcore totals, i.e. multiply-adds
(fvcore counts one fused multiply-add as one flop), so it compares with our ``macs_fvcore`` / 1e9.

Sources (read in the official repositories; the design notes ``dbra-debiformer.md`` §5 and ``bra-biformer.md`` §5
record the reading and a recount of each model with fvcore on the official code):

* DeBiFormer: the ImageNet-1K table of the README of maclong01/DeBiFormer at 1ceb090 (paper: arXiv 2410.08582,
  ACCV 2024). No throughput or latency is published: the README has none, and the training script's throughput
  mode does not run (it imports a module missing from the repository).
* BiFormer: the ImageNet-1K table of the README of rayleizhu/BiFormer at 1697bbb (paper: arXiv 2303.08810,
  CVPR 2023). The README publishes no throughput either.

The swap presets (``debiformer_t_swap_<attention>``) are this project's ablations: nothing is published for them.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

__all__ = ["Published", "PUBLISHED", "published"]

_DEBIFORMER = "DeBiFormer README (maclong01/DeBiFormer @1ceb090), ImageNet-1K table; arXiv 2410.08582"
_BIFORMER = "BiFormer README (rayleizhu/BiFormer @1697bbb), ImageNet-1K table; arXiv 2303.08810"


@dataclasses.dataclass(frozen=True)
class Published:
    """One model's published figures, each the printed text or None where the source gives none.

    Attributes:
        model: the registry name (``attentions.models.list_models()``).
        name: the model's name in the source.
        params_m: parameters in millions.
        gflops: the source's GFLOPs at 224², which are fvcore multiply-adds (our GMACs).
        top1: ImageNet-1K top-1 accuracy in percent at 224².
        throughput_img_s: images per second, with ``throughput_hardware`` saying on what.
        source: where the figures are printed.
        note: what a reader must know to compare (a documented discrepancy, a rounding convention).
    """

    model: str
    name: str
    params_m: Optional[str]
    gflops: Optional[str]
    top1: Optional[str]
    source: str
    throughput_img_s: Optional[str] = None
    throughput_hardware: Optional[str] = None
    note: str = ""

    def __post_init__(self) -> None:
        for field in ("params_m", "gflops", "top1", "throughput_img_s"):
            text = getattr(self, field)
            if text is not None:
                float(text)  # a figure that is not a number is a typo in this table

    def columns(self) -> dict[str, Any]:
        """The ``paper_*`` columns of a results row (printed text kept as text)."""
        return {"paper_name": self.name, "paper_params_m": self.params_m, "paper_gflops": self.gflops,
                "paper_top1": self.top1, "paper_throughput_img_s": self.throughput_img_s,
                "paper_throughput_hardware": self.throughput_hardware, "paper_source": self.source,
                "paper_note": self.note}


PUBLISHED: dict[str, Published] = {p.model: p for p in (
    Published("debiformer_t", "DeBiFormer-T", "21.4", "2.6", "81.9", _DEBIFORMER,
              note="the README truncates: the official debi_tiny counts 21.496 M / 2.654 G with fvcore, as ours "
                   "does (21.4 / 2.6 when cut, 21.5 / 2.7 when rounded)"),
    Published("debiformer_s", "DeBiFormer-S", "44", "5.4", "83.9", _DEBIFORMER),
    Published("debiformer_b", "DeBiFormer-B", "77", "11.8", "84.4", _DEBIFORMER,
              note="documented discrepancy: the README's 77 M / 11.8 G do not describe the official code, whose "
                   "registered debi_base (built here) has 95.50 M / 11.741 G with fvcore; no nearby depth or MLP "
                   "ratio gives 77 M (dbra-debiformer.md §5.1)"),
    Published("biformer_t", "BiFormer-T", "13.1", "2.2", "81.4", _BIFORMER),
    Published("biformer_s", "BiFormer-S", "25.5", "4.5", "83.8", _BIFORMER),
    Published("biformer_b", "BiFormer-B", "56.8", "9.8", "84.3", _BIFORMER),
)}


def published(model: str) -> Optional[Published]:
    """The published figures of registered model ``model``, or None (the swap presets, any other model)."""
    return PUBLISHED.get(model)
