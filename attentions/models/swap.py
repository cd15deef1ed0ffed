"""Macro designs and per-stage attention configs: one backbone, the attention swapped.

A *macro design* fixes everything but the attention: depths, widths, MLP ratios, block type (one or two attention
slots), head. :func:`slot_config` gives each mechanism's config for a stage from the stage's width, heads and token
grid, following the official per-stage settings of its paper at 224² and scaling them for other grids:

============ ===================================================================================================
mechanism    stage i (grid g = image/4/2^i, S = the largest divisor of g that is <= 7, i.e. 7 at 224²)
============ ===================================================================================================
``mhsa``     heads only (global attention)
``bra``      n_win S, topk (1, 4, 16, S²)[i] capped at S², LCE 5 (BiFormer; stage 4 with S² = full attention)
``dbra``     n_win S, topk (4, 8, 16, 49)[i] capped at S², groups per macro, offset kernel (9, 7, 5, 3)[i],
             offset stride g/S (one agent per region, 8/4/2/1 at 224²), FFN ratio per macro, rpe_size g, LCE 5
             (DeBiFormer §3.1)
``dat``      DAT++: groups per macro, stride g/S (7×7 keys at 224²), offset kernel (9, 7, 5, 3)[i], unbounded
             offsets (orf -1), rpe_size g
``agent``    agent_num (9, 16, 49, 49)[i] capped at g² (Agent-PVT), window g (global, as Agent-Swin)
============ ===================================================================================================

Heads are width / head_dim (32 in every macro of the papers). Groups are capped to divide the heads.

Inputs of another size than the configs were made for: ``bra`` and ``dbra`` slots are built with ``auto_pad`` (zero
padding to multiples of n_win, then cropping, as the official ``auto_pad``), so a model made for 224² also runs at
256², 320², 384² or 224×288; on a grid that fits (every stage at the design size) padding does nothing, so those
outputs and the state-dict keys and shapes are unchanged. The other mechanisms take any grid as they are: ``dat`` and
``dbra`` read ``rpe_table`` in normalised coordinates (its size only sets the table's resolution), ``agent`` resizes
its position biases, ``mhsa`` is global.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Sequence

import attentions

from .blocks import MODEL_ATTENTIONS, SlotSpec

__all__ = ["Macro", "MACROS", "stage_grids", "slot_config", "swap_slots", "apply_overrides", "SWAP_ATTENTIONS"]

SWAP_ATTENTIONS = ("mhsa", "bra", "dat", "agent", "dbra")


@dataclasses.dataclass(frozen=True)
class Macro:
    """A backbone design with the attention left open.

    Args:
        depths, embed_dims, mlp_ratios: per stage.
        slots_per_block: 2 (DeBiFormer block: attn1, attn2) or 1 (BiFormer block).
        mlp: ``"conv"`` or ``"linear"`` block MLP.
        head_dim: channels per head (heads = width / head_dim).
        n_groups: offset groups per stage (dbra, dat).
        ffn_ratios: DBRA's internal FFN ratio per stage.
        drop_path_rate: the official stochastic-depth rate of the design.
        init: weight init (see :class:`~attentions.models.hierarchical.HierarchicalViT`).
    """

    depths: tuple[int, ...]
    embed_dims: tuple[int, ...]
    mlp_ratios: tuple[float, ...] = (3, 3, 3, 3)
    slots_per_block: int = 2
    mlp: str = "conv"
    head_dim: int = 32
    n_groups: tuple[int, ...] = (1, 2, 4, 8)
    ffn_ratios: tuple[float, ...] = (3, 3, 3, 3)
    drop_path_rate: float = 0.0
    init: str = "default"

    def heads(self, i: int) -> int:
        return max(1, self.embed_dims[i] // self.head_dim)


MACROS: dict[str, Macro] = {
    "debiformer_t": Macro((1, 1, 4, 1), (64, 128, 256, 512)),
    "debiformer_s": Macro((2, 2, 9, 3), (64, 128, 256, 512), mlp_ratios=(3, 3, 3, 2), ffn_ratios=(3, 3, 3, 1),
                          drop_path_rate=0.3),
    "debiformer_b": Macro((2, 2, 9, 2), (96, 192, 384, 768), n_groups=(1, 2, 3, 6), drop_path_rate=0.4),
    "biformer_t": Macro((2, 2, 8, 2), (64, 128, 256, 512), slots_per_block=1, mlp="linear", init="trunc_normal"),
    "biformer_s": Macro((4, 4, 18, 4), (64, 128, 256, 512), slots_per_block=1, mlp="linear", init="trunc_normal",
                        drop_path_rate=0.15),
    "biformer_b": Macro((4, 4, 18, 4), (96, 192, 384, 768), slots_per_block=1, mlp="linear", init="trunc_normal"),
    # CPU-sized DeBiFormer-style design for tests and the smoke suite (64² input: grids 16, 8, 4, 2)
    "tiny": Macro((1, 1, 1, 1), (32, 64, 96, 128), mlp_ratios=(2, 2, 2, 2), head_dim=16, n_groups=(1, 2, 2, 4),
                  ffn_ratios=(2, 2, 2, 2)),
}


def stage_grids(img_size: int) -> list[int]:
    """Token grid side of each stage: the stem's two stride-2 convs, then one per stage (ceil each time).

    Every slot config is derived from these, so a size that is not a positive int fails here, naming ``img_size``,
    rather than deep inside a slot's attention."""
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise ValueError(f"img_size={img_size!r} is not allowed: expected a positive int (the input side in pixels)")
    grids, g = [], img_size
    for i in range(5):
        g = (g + 1) // 2
        if i >= 1:
            grids.append(g)
    return grids


def _n_win(grid: int) -> int:
    return max(d for d in range(1, min(grid, 7) + 1) if grid % d == 0)


def slot_config(attention: str, i: int, macro: Macro, grid: int) -> dict[str, Any]:
    """The config (without ``dim``) of ``attention`` in stage ``i`` of ``macro`` at a ``grid``×``grid`` map."""
    heads, S = macro.heads(i), _n_win(grid)
    groups = math.gcd(macro.n_groups[i], heads)
    if attention == "mhsa":
        return {"num_heads": heads}
    if attention == "bra":
        return {"num_heads": heads, "n_win": S, "topk": min((1, 4, 16, 49)[i], S * S), "lce_kernel": 5,
                "auto_pad": True}
    if attention == "dbra":
        return {"num_heads": heads, "n_win": S, "topk": min((4, 8, 16, 49)[i], S * S), "n_groups": groups,
                "offset_kernel": (9, 7, 5, 3)[i], "offset_stride": max(grid // S, 1),
                "ffn_ratio": macro.ffn_ratios[i], "rpe_size": grid, "lce_kernel": 5, "offset_channels": 1,
                "auto_pad": True}
    if attention == "dat":
        return {"num_heads": heads, "variant": "pp", "n_groups": groups, "stride": max(grid // S, 1),
                "offset_kernel": (9, 7, 5, 3)[i], "offset_range_factor": -1.0, "rpe_size": grid}
    if attention == "agent":
        return {"num_heads": heads, "agent_num": min((9, 16, 49, 49)[i], math.isqrt(grid * grid) ** 2),
                "window_size": grid}
    if attention == "attention_lepe":
        return {"num_heads": 8, "qkv_bias": False, "side_dwconv": 5}
    raise ValueError(f"attention={attention!r} has no per-stage defaults: expected one of "
                     f"{', '.join(SWAP_ATTENTIONS)} (or give every slot's config yourself)")


def swap_slots(attention: str, macro: Macro, img_size: int = 224) -> list[list[SlotSpec]]:
    """Every slot of every stage filled with ``attention`` (its per-stage config at ``img_size``)."""
    grids = stage_grids(img_size)
    return [[(attention, slot_config(attention, i, macro, grids[i]))] * macro.slots_per_block for i in range(4)]


def _accepted(name: str) -> Optional[set[str]]:
    if name in MODEL_ATTENTIONS:
        return {"num_heads", "qkv_bias", "side_dwconv"}
    config_cls = getattr(attentions.resolve(name), "Config", None)
    return {f.name for f in dataclasses.fields(config_cls)} if config_cls is not None else None


def apply_overrides(slots: Sequence[Sequence[SlotSpec]], overrides: Optional[Mapping[str, Any]]
                    ) -> list[list[SlotSpec]]:
    """``overrides`` merged into every slot whose attention takes the key; a key no slot takes raises. A ``topk``
    is capped at the slot's ``n_win²`` (a late stage of a small image has fewer regions than an early one), as the
    presets' per-stage top-k are, so one top-k can be varied across a whole backbone.

    ``dim`` is set per stage by the backbone and cannot be overridden.
    """
    overrides = dict(overrides or {})
    if "dim" in overrides:
        raise ValueError("attn_overrides: 'dim' is set per stage by the backbone (embed_dims); remove it")
    used: set[str] = set()
    out = []
    for stage in slots:
        new_stage = []
        for name, cfg in stage:
            keys = _accepted(name)
            take = {k: v for k, v in overrides.items() if keys is None or k in keys}
            used |= set(take)
            n_win = take.get("n_win", cfg.get("n_win"))
            if isinstance(take.get("topk"), int) and isinstance(n_win, int):
                take["topk"] = min(take["topk"], n_win * n_win)  # as the presets: at most every region
            new_stage.append((name, {**cfg, **take}))
        out.append(new_stage)
    unused = sorted(set(overrides) - used)
    if unused:
        names = sorted({name for stage in slots for name, _ in stage})
        raise ValueError(f"attn_overrides: no attention of this model ({', '.join(names)}) takes {unused}")
    return out
