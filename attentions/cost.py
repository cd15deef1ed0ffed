"""Analytic cost model: multiply-adds of one forward pass, broken down by part.

Conventions (the papers' and fvcore's): one fused multiply-add = 1 MAC; softmax, top-k, mean, gather,
element-wise adds and activations cost 0; a bilinear ``grid_sample`` costs, like fvcore's handle, one MAC per
output element per tap group (see each mechanism's ``cost``). Counts are for batch 1 at the given H×W.
"""
from __future__ import annotations

import dataclasses

__all__ = ["Cost", "PARTS"]

#: the parts every mechanism reports (zero where a mechanism has no such part)
PARTS = ("projections", "routing", "attention", "offsets_sampling_rpe", "lce")


@dataclasses.dataclass(frozen=True)
class Cost:
    """Multiply-adds of one forward pass of one image, by part, and the keys each query attends to."""

    macs: dict[str, int]
    keys_per_query: float

    def __post_init__(self) -> None:
        unknown = set(self.macs) - set(PARTS)
        if unknown:
            raise ValueError(f"Cost.macs has unknown parts {sorted(unknown)}; allowed: {PARTS}")
        for part in PARTS:
            self.macs.setdefault(part, 0)

    @property
    def total(self) -> int:
        return sum(self.macs.values())
