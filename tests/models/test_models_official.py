"""Model-level ``from_official``: an official-layout checkpoint, written here from the official naming (stem and
blocks from the macro-architecture specs, attention keys from official-state-dicts.md), loads strictly and every
tensor lands where it belongs."""
from __future__ import annotations

import pytest
import torch

import attentions
from attentions import models

DIMS = (64, 128, 256, 512)


def _bn(prefix: str, c: int) -> dict:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def _conv(prefix: str, c_out: int, c_in: int, k: int, bias: bool = True) -> dict:
    out = {f"{prefix}.weight": (c_out, c_in, k, k)}
    return {**out, f"{prefix}.bias": (c_out,)} if bias else out


def _trunk(dims, num_classes=1000) -> dict:
    """Stem, downsampling, head norm and head of BiFormer/DeBiFormer (``downsample_layers``, ``norm``, ``head``)."""
    keys = {**_conv("downsample_layers.0.0", dims[0] // 2, 3, 3), **_bn("downsample_layers.0.1", dims[0] // 2),
            **_conv("downsample_layers.0.3", dims[0], dims[0] // 2, 3), **_bn("downsample_layers.0.4", dims[0])}
    for i in range(1, 4):
        keys.update({**_conv(f"downsample_layers.{i}.0", dims[i], dims[i - 1], 3),
                     **_bn(f"downsample_layers.{i}.1", dims[i])})
    return {**keys, **_bn("norm", dims[3]), "head.weight": (num_classes, dims[3]), "head.bias": (num_classes,)}


def _bra(p: str, c: int) -> dict:  # BiFormer legacy BiLevelRoutingAttention
    return {f"{p}.qkv.qkv.weight": (3 * c, c), f"{p}.qkv.qkv.bias": (3 * c,), f"{p}.wo.weight": (c, c),
            f"{p}.wo.bias": (c,), f"{p}.lepe.weight": (c, 1, 5, 5), f"{p}.lepe.bias": (c,)}


def _dbra(p: str, c: int, i: int, ffn: int = 3) -> dict:  # DeBiLevelRoutingAttention, DeBiFormer-T/S stage i
    g, kk, q = (1, 2, 4, 8)[i], (9, 7, 5, 3)[i], (56, 28, 14, 7)[i]
    keys = {f"{p}.rpe_table": (c // 32, 2 * q - 1, 2 * q - 1), f"{p}.lepe1.weight": (c, 1, 5, 5),
            f"{p}.lepe1.bias": (c,), f"{p}.qkv_conv.qkv.weight": (3 * c, c, 1, 1), f"{p}.qkv_conv.qkv.bias": (3 * c,),
            f"{p}.conv_offset_q.0.weight": (c // g, 1, kk, kk), f"{p}.conv_offset_q.1.norm.weight": (c // g,),
            f"{p}.conv_offset_q.1.norm.bias": (c // g,), f"{p}.conv_offset_q.3.weight": (1, c // g, 1, 1),
            f"{p}.mlp.linear1.0.weight": (ffn * c, c, 1, 1), f"{p}.mlp.linear1.0.bias": (ffn * c,),
            f"{p}.mlp.linear2.0.weight": (c, ffn * c, 1, 1), f"{p}.mlp.linear2.0.bias": (c,),
            f"{p}.mlp.dwc.weight": (ffn * c, 1, 3, 3), f"{p}.mlp.dwc.bias": (ffn * c,)}
    for name in ("proj_q", "proj_k", "proj_v", "proj_out", "unifyheads1"):
        keys.update(_conv(f"{p}.{name}", c, c, 1))
    for name in ("norm", "norm2"):
        keys.update({f"{p}.{name}.weight": (c,), f"{p}.{name}.bias": (c,)})
    return keys


def _conv_mlp(p: str, c: int, r: int = 3) -> dict:  # TransformerMLPWithConv
    return {**_conv(f"{p}.linear1.0", r * c, c, 1), **_conv(f"{p}.dwc", r * c, 1, 3),
            **_conv(f"{p}.linear2.0", c, r * c, 1)}


def _ln(p: str, c: int) -> dict:
    return {f"{p}.weight": (c,), f"{p}.bias": (c,)}


def _blocks(depths):
    """(stage, channels, key prefix ``stages.i.j``) of every block, stage by stage, for these stage depths."""
    for i, depth in enumerate(depths):
        for j in range(depth):
            yield i, DIMS[i], f"stages.{i}.{j}"


def debiformer_t_keys() -> dict:
    keys = _trunk(DIMS)
    for i, c, b in _blocks((1, 1, 4, 1)):
        keys.update({**_conv(f"{b}.pos_embed1", c, 1, 3), **_conv(f"{b}.pos_embed2", c, 1, 3),
                     **_conv_mlp(f"{b}.mlp1", c), **_conv_mlp(f"{b}.mlp2", c)})
        for n in range(1, 5):
            keys.update(_ln(f"{b}.norm{n}", c))
        keys.update(_bra(f"{b}.attn1", c) if i < 3 else _dbra(f"{b}.attn1", c, i))
        keys.update(_dbra(f"{b}.attn2", c, i))
    return keys


def biformer_t_keys() -> dict:
    keys = _trunk(DIMS)
    for i, c, b in _blocks((2, 2, 8, 2)):
        keys.update({**_conv(f"{b}.pos_embed", c, 1, 3), **_ln(f"{b}.norm1", c), **_ln(f"{b}.norm2", c),
                     f"{b}.mlp.0.weight": (3 * c, c), f"{b}.mlp.0.bias": (3 * c,),
                     f"{b}.mlp.3.weight": (c, 3 * c), f"{b}.mlp.3.bias": (c,)})
        if i < 3:
            keys.update(_bra(f"{b}.attn", c))
        else:  # AttentionLePE: qkv without bias
            keys.update({f"{b}.attn.qkv.weight": (3 * c, c), f"{b}.attn.proj.weight": (c, c),
                         f"{b}.attn.proj.bias": (c,), **_conv(f"{b}.attn.lepe", c, 1, 5)})
    return keys


def fill(keys: dict) -> dict:
    """Tensor k (in key order) is filled with the value k+1, so every tensor can be traced to its key."""
    return {k: (torch.tensor(i + 1) if shape == () else torch.full(shape, float(i + 1)))
            for i, (k, shape) in enumerate(keys.items())}


@pytest.mark.parametrize("name, keys", [("debiformer_t", debiformer_t_keys), ("biformer_t", biformer_t_keys)])
def test_official_checkpoint_loads_every_tensor(name, keys):
    official = fill(keys())
    model = models.from_official(name, {"model": official})  # the official scripts save {'model': state_dict}
    own = model.state_dict()
    assert len(own) == len(official)
    ids = {}
    for key, tensor in own.items():
        values = tensor.flatten().unique()
        assert len(values) == 1, f"{key} mixes tensors of several official keys"
        ids[key] = int(values[0])
    assert sorted(ids.values()) == list(range(1, len(official) + 1))  # a bijection between the two key sets
    for key in official:  # outside the attention converters, the names are the official ones
        if ".attn" not in key:
            assert ids[key] == int(official[key].flatten()[0])


def test_loaded_model_runs_and_ddp_prefix_is_stripped():
    official = {"module." + k: v for k, v in fill(biformer_t_keys()).items()}
    for k, v in official.items():
        if v.is_floating_point():
            v.uniform_(0.5, 1.0) if k.endswith("running_var") else v.uniform_(-0.05, 0.05)
    model = models.from_official("biformer_t", official).eval()
    assert torch.isfinite(model(torch.randn(1, 3, 112, 112))).all()


def test_missing_and_misshapen_keys_are_listed():
    official = fill(debiformer_t_keys())
    del official["stages.2.3.attn1.wo.bias"]
    official["head.weight"] = torch.zeros(10, 512)
    with pytest.raises(attentions.OfficialStateDictError) as err:
        models.from_official("debiformer_t", official)
    text = str(err.value)
    assert "missing keys: stages.2.3.attn1.wo.bias" in text
    assert "head.weight: got (10, 512), expected (1000, 512)" in text


def test_rename_maps_other_block_names():
    official = {k.replace(".pos_embed1.", ".pos_embed_a."): v for k, v in fill(debiformer_t_keys()).items()}
    with pytest.raises(attentions.OfficialStateDictError, match="unexpected keys: stages.0.0.pos_embed_a.bias"):
        models.from_official("debiformer_t", official)
    rename = {f"stages.{i}.{j}.pos_embed_a.": f"stages.{i}.{j}.pos_embed1."
              for i, d in enumerate((1, 1, 4, 1)) for j in range(d)}
    models.from_official("debiformer_t", official, rename=rename)
