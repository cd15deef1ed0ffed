"""Registered backbones: DeBiFormer-T/S/B, BiFormer-T/S/B, and the attention-swap models.

* ``debiformer_t/s/b``: the official ``debi_tiny/small/base`` (DeBiFormer §4): stages 1-3 interleave
  BRA (``attn1``, topk 1/4/16) and DBRA (``attn2``, topk 4/8/16); stage 4 is DBRA (topk 49) in both slots.
* ``biformer_t/s/b``: the official ``biformer_tiny/small/base`` (BiFormer §4.1): BRA in stages 1-3,
  ``AttentionLePE`` (8 heads, no qkv bias) in stage 4.
* ``debiformer_t_swap_<attention>``: the DeBiFormer-T macro design with ``<attention>`` in every slot, per-stage
  configs from :func:`attentions.models.swap.slot_config`. ``..._iso`` variants widen or narrow the block MLPs
  (one ratio for all stages) so that the parameter count is within 10% of DeBiFormer-T's.
* ``swap``: any macro design (``MACROS``) with any attention, at any input size, with config overrides.

Every entrypoint takes ``img_size`` (default 224, the input side every slot config is derived from: region counts,
offset strides, relative-position table sizes, agent counts; see :func:`attentions.models.swap.stage_grids`),
``num_classes``, ``drop_path_rate``, ``in_chans``, ``attn_overrides`` (merged into every slot whose attention takes
the key, e.g. ``{"impl": "torch"}``) and the other :class:`~attentions.models.hierarchical.HierarchicalViT`
arguments. At 224 the official presets hold the official per-stage constants (``rpe_size`` 56, 28, 14, 7, seven
regions per side); at another size their tables and region counts follow that size's token grids, so the official
checkpoints (made at 224²) load only into the 224 build.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from ._registry import register_model
from .hierarchical import HierarchicalViT
from .swap import MACROS, Macro, apply_overrides, slot_config, stage_grids, swap_slots

__all__ = ["build_backbone", "ISO_MLP_RATIOS"]

#: block-MLP ratio (all stages) of each ``debiformer_t_swap_<attention>_iso`` preset, chosen as the multiple of
#: 0.25 that brings the parameter count closest to DeBiFormer-T's (tests/models check the 10% rule)
ISO_MLP_RATIOS = {"mhsa": 6.75, "bra": 6.75, "dat": 6.75, "agent": 6.5, "dbra": 1.75}


def build_backbone(macro: Macro, slots, attn_overrides: Optional[Mapping[str, Any]] = None,
                   **kwargs: Any) -> HierarchicalViT:
    """A :class:`HierarchicalViT` of ``macro`` with the given slots; ``kwargs`` override the macro's fields."""
    args = dict(depths=macro.depths, embed_dims=macro.embed_dims, mlp_ratios=macro.mlp_ratios, mlp=macro.mlp,
                drop_path_rate=macro.drop_path_rate, init=macro.init)
    args.update(kwargs)
    return HierarchicalViT(slots=apply_overrides(slots, attn_overrides), **args)


def _debiformer_slots(macro: Macro, img_size: int) -> list:
    grids = stage_grids(img_size)  # at 224 the official per-stage constants (rpe_size 56, 28, 14, 7; n_win 7)
    dbra = [("dbra", slot_config("dbra", i, macro, grids[i])) for i in range(4)]
    bra = [("bra", slot_config("bra", i, macro, grids[i])) for i in range(3)]
    return [[bra[0], dbra[0]], [bra[1], dbra[1]], [bra[2], dbra[2]], [dbra[3], dbra[3]]]


def _biformer_slots(macro: Macro, img_size: int) -> list:
    grids = stage_grids(img_size)
    slots = [[("bra", slot_config("bra", i, macro, grids[i]))] for i in range(3)]
    return slots + [[("attention_lepe", slot_config("attention_lepe", 3, macro, grids[3]))]]


def _preset_entry(name: str, slots, doc: str):
    """Register the official preset ``name``: macro design ``MACROS[name]`` with ``slots(macro, img_size)``."""
    def entry(img_size: int = 224, **kwargs: Any) -> HierarchicalViT:
        return build_backbone(MACROS[name], slots(MACROS[name], img_size), **kwargs)

    entry.__name__, entry.__doc__ = name, doc
    return register_model(entry)


#: the official presets: name -> (slot layout, docstring with the official size)
_PRESETS = {
    "debiformer_t": (_debiformer_slots,
                     "DeBiFormer-T (``debi_tiny``): 21.50 M params, 2.654 G MACs at 224² (fvcore, official code)."),
    "debiformer_s": (_debiformer_slots, "DeBiFormer-S (``debi_small``): 44.01 M params, 5.440 G MACs at 224²."),
    "debiformer_b": (_debiformer_slots, "DeBiFormer-B (``debi_base``) as registered in the official code: 95.50 M, "
                                        "11.741 G (README says 77 M)."),
    "biformer_t": (_biformer_slots, "BiFormer-T: 13.1 M params, 2.2 G MACs at 224² (README)."),
    "biformer_s": (_biformer_slots, "BiFormer-S: 25.5 M params, 4.5 G MACs at 224² (README)."),
    "biformer_b": (_biformer_slots, "BiFormer-B: 56.8 M params, 9.8 G MACs at 224² (README)."),
}
for _name, (_slots, _doc) in _PRESETS.items():
    globals()[_name] = _preset_entry(_name, _slots, _doc)


@register_model
def swap(attention: str, macro: str = "debiformer_t", img_size: int = 224,
         attn_overrides: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> HierarchicalViT:
    """Macro design ``macro`` with ``attention`` in every slot, per-stage configs for ``img_size`` input.

    Args:
        attention: ``mhsa``, ``bra``, ``dat``, ``agent`` or ``dbra`` (per-stage defaults exist for these).
        macro: a key of :data:`attentions.models.swap.MACROS` (``debiformer_t``, ``tiny``, ...).
        img_size: the input side the per-stage configs are made for (region counts, strides, table sizes).
        attn_overrides: config keys applied to every slot (not ``dim``).
    """
    if macro not in MACROS:
        raise ValueError(f"macro={macro!r} is not allowed: expected one of {', '.join(MACROS)}")
    design = MACROS[macro]
    return build_backbone(design, swap_slots(attention, design, img_size), attn_overrides, **kwargs)


def _swap_entry(attention: str, iso: bool):
    def entry(img_size: int = 224, **kwargs: Any) -> HierarchicalViT:
        if iso:
            kwargs.setdefault("mlp_ratios", (ISO_MLP_RATIOS[attention],) * 4)
        return swap(attention, "debiformer_t", img_size=img_size, **kwargs)

    kind = f"block-MLP ratio {ISO_MLP_RATIOS[attention]} (iso-parameter)" if iso else "the official MLP ratio 3"
    entry.__name__ = f"debiformer_t_swap_{attention}" + ("_iso" if iso else "")
    entry.__doc__ = (f"DeBiFormer-T macro design with {attention} in every attention slot, {kind}; slot configs "
                     "made for ``img_size`` input.")
    return register_model(entry)


for _attention in ("mhsa", "bra", "dat", "agent", "dbra"):
    globals()[f"debiformer_t_swap_{_attention}"] = _swap_entry(_attention, iso=False)
    globals()[f"debiformer_t_swap_{_attention}_iso"] = _swap_entry(_attention, iso=True)
