"""The backbones as timm models, driven by timm's own tooling: ``timm.create_model`` / ``list_models``,
``resolve_data_config`` / ``create_transform``, pretrained loading through the ``file`` hook, ``features_only``; and
the classifier interface (``forward_head``, ``reset_classifier``) checked against independent computations."""
from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

import attentions  # noqa: E402
from attentions import models  # noqa: E402
from attentions.models import HierarchicalViT, NoPretrainedWeightsError  # noqa: E402

TIMM_NAMES = [n for n in models.list_models() if n != "swap"]
T_SIZED = ["debiformer_t", "biformer_t"] + [n for n in TIMM_NAMES if "_swap_" in n]
BIG = ["debiformer_s", "debiformer_b", "biformer_s", "biformer_b"]
DIMS = (64, 128, 256, 512)


def shapes(model: torch.nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def seeded(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs).eval()


def test_the_issue_command_works():
    """Issue 11's done-when: timm builds DeBiFormer-T with a new head and stochastic depth, and has its config."""
    m = timm.create_model("debiformer_t", pretrained=False, num_classes=10, drop_path_rate=0.1, device="meta")
    assert isinstance(m, HierarchicalViT) and m.get_classifier().out_features == 10
    assert m.stages[-1][-1].drop_path.p == pytest.approx(0.1)  # the linear rule ends at drop_path_rate
    cfg = m.pretrained_cfg
    assert cfg["architecture"] == "debiformer_t" and cfg["url"] == "" and cfg["input_size"] == (3, 224, 224)
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert (cfg["crop_pct"], cfg["interpolation"], cfg["num_classes"]) == (0.875, "bicubic", 1000)


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_timm_builds_the_same_model_as_ours(name):
    """Every preset is a timm entrypoint; timm's model has our model's parameter names and shapes (on meta)."""
    with torch.device("meta"):
        ours = models.create_model(name)
    theirs = timm.create_model(name, device="meta")
    assert type(theirs) is HierarchicalViT and next(theirs.parameters()).is_meta
    assert shapes(theirs) == shapes(ours)
    assert timm.models.get_pretrained_cfg(name).architecture == name


def test_timm_lists_the_presets_but_not_the_generic_swap():
    for pattern in ("debiformer*", "biformer*"):
        assert timm.list_models(pattern) == models.list_models(pattern)
    assert len(timm.list_models("debiformer_t_swap_*")) == 10
    assert models.list_models("swap") == ["swap"] and not timm.is_model("swap")


def test_resolve_data_config_and_eval_transform():
    """timm's data pipeline reads the config: ImageNet mean/std, bicubic resize to 224 / 0.875 = 256, crop 224."""
    m = timm.create_model("biformer_t", device="meta")
    cfg = timm.data.resolve_data_config(model=m)
    assert cfg == {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
                   "std": (0.229, 0.224, 0.225), "crop_pct": 0.875, "crop_mode": "center"}
    pytest.importorskip("torchvision")
    text = str(timm.data.create_transform(**cfg))
    assert "Resize(size=256, interpolation=bicubic" in text and "CenterCrop(size=(224, 224))" in text


@pytest.mark.parametrize("name", ["debiformer_t", "debiformer_t_swap_agent"])
def test_pretrained_without_a_file_is_a_clear_error(name):
    with pytest.raises(NoPretrainedWeightsError, match=r"no pretrained weights can be downloaded.*"
                       r"pretrained_cfg_overlay=dict\(file="):
        timm.create_model(name, pretrained=True)
    with pytest.raises(NoPretrainedWeightsError, match="from_official"):  # our own registry says the same
        models.create_model(name, pretrained=True)
    with torch.device("meta"):
        assert isinstance(models.create_model(name, pretrained=False), HierarchicalViT)


def test_pretrained_file_that_does_not_exist_is_named(tmp_path):
    missing = tmp_path / "debiformer_tiny.pth"
    with pytest.raises(FileNotFoundError, match="debiformer_tiny.pth.*does not exist"):
        timm.create_model("debiformer_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(missing)))


def official_debiformer_t() -> dict:
    """An official-layout DeBiFormer-T checkpoint, written from the official names (tests/models/test_models_official)
    with tensor k filled with k + 1."""
    from test_models_official import debiformer_t_keys, fill

    return fill(debiformer_t_keys())


def test_file_hook_loads_an_official_checkpoint_as_from_official(tmp_path):
    """timm's ``file`` hook gives the same model as ``from_official`` (DDP prefix and {'model': ...} as released,
    BatchNorm counters absent as in older checkpoints)."""
    official = {k: v for k, v in official_debiformer_t().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "debiformer_tiny.pth"
    torch.save({"model": {"module." + k: v for k, v in official.items()}, "epoch": 300}, path)
    ref = models.from_official("debiformer_t", official).state_dict()
    m = timm.create_model("debiformer_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    got = m.state_dict()
    assert got.keys() == ref.keys()
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    assert m.pretrained_cfg["file"] == str(path)


def test_file_hook_adapts_head_and_stem(tmp_path):
    """A new num_classes drops the official head; in_chans=1 sums the stem's RGB weights (timm's adaptation)."""
    official = official_debiformer_t()
    path = tmp_path / "ckpt.pth"
    torch.save(official, path)
    m = timm.create_model("debiformer_t", pretrained=True, num_classes=10, in_chans=1,
                          pretrained_cfg_overlay=dict(file=str(path)))
    sd = m.state_dict()
    assert sd["head.weight"].shape == (10, 512) and sd["head.weight"].unique().numel() > 1  # fresh, not official
    stem = official["downsample_layers.0.0.weight"]
    torch.testing.assert_close(sd["downsample_layers.0.0.weight"], stem.sum(1, keepdim=True))
    for key in ("norm.weight", "stages.3.0.attn2.rpe_table", "stages.0.0.attn1.qkv.qkv.weight"):
        assert torch.equal(sd[key], official[key])


def test_file_hook_reports_a_mismatched_checkpoint(tmp_path):
    official = official_debiformer_t()
    del official["stages.2.3.attn1.wo.bias"]
    official["stages.1.0.attn2.rpe_table"] = torch.zeros(4, 27, 27)
    path = tmp_path / "ckpt.pth"
    torch.save({"model": official}, path)
    with pytest.raises(attentions.OfficialStateDictError) as err:
        timm.create_model("debiformer_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    text = str(err.value)
    assert "missing keys: stages.2.3.attn1.wo.bias" in text
    assert "stages.1.0.attn2.rpe_table: got (4, 27, 27), expected (4, 55, 55)" in text


def test_forward_head_matches_an_independent_pooling():
    m = seeded("debiformer_t")
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feats = m.forward_features(x)
        pooled = m.forward_head(feats, pre_logits=True)
        logits = m(x)
    assert feats.shape == (2, 512, 2, 3) and pooled.shape == (2, 512)
    torch.testing.assert_close(pooled, feats.mean(dim=(2, 3)), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(logits, pooled @ m.head.weight.T + m.head.bias, rtol=1e-5, atol=1e-5)
    assert torch.equal(logits, m.forward_head(m.forward_features(x)).detach())


def test_reset_classifier_changes_the_head():
    m = seeded("biformer_t")
    x = torch.randn(1, 3, 64, 64)
    m.reset_classifier(7)
    assert isinstance(m.get_classifier(), torch.nn.Linear) and m.num_classes == 7
    with torch.no_grad():
        assert m(x).shape == (1, 7)
        m.reset_classifier(0)
        pooled = m(x)
        m.reset_classifier(0, global_pool="")
        fmap = m(x)
    assert isinstance(m.get_classifier(), torch.nn.Identity)
    assert pooled.shape == (1, 512) and fmap.shape == (1, 512, 2, 2)
    torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3)), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="global_pool=''.*num_classes=5"):
        m.reset_classifier(5)


def test_drop_rate_and_global_pool_kwargs():
    m = seeded("debiformer_t", drop_rate=0.25, global_pool="avg")
    assert m.head_drop.p == 0.25
    feats = torch.randn(4, 512, 7, 7) + 3.0  # pooled values far from zero: a zero is a dropped feature
    m.train()
    dropped = (m.forward_head(feats, pre_logits=True) == 0).float().mean().item()
    m.eval()
    assert 0.15 < dropped < 0.35 and (m.forward_head(feats, pre_logits=True) != 0).all()
    unpooled = timm.create_model("debiformer_t", num_classes=0, global_pool="", device="meta")
    assert unpooled.forward_head(feats.to("meta")).shape == (4, 512, 7, 7)
    with pytest.raises(ValueError, match="global_pool='max' is not allowed"):
        timm.create_model("debiformer_t", global_pool="max", device="meta")


def stage_outputs(model: HierarchicalViT, x: torch.Tensor) -> list[torch.Tensor]:
    """The classifier's stage outputs, taken with forward hooks (independent of forward_intermediates)."""
    out: list[torch.Tensor] = []
    handles = [s.register_forward_hook(lambda mod, inp, o: out.append(o)) for s in model.stages]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return out


@pytest.mark.parametrize("size", [224, 256])
def test_features_only_pyramid_equals_the_classifier_stages(size):
    """timm's features_only wrapper: four NCHW maps at strides 4..32, equal to the stages of the classifier whose
    weights it was given (through the pretrained state_dict hook)."""
    clf = seeded("debiformer_t")
    feat = timm.create_model("debiformer_t", features_only=True, pretrained=True,
                             pretrained_cfg_overlay=dict(state_dict=clf.state_dict())).eval()
    assert feat.feature_info.reduction() == [4, 8, 16, 32] and feat.feature_info.channels() == list(DIMS)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        maps = feat(x)
    assert [tuple(t.shape) for t in maps] == [(1, c, size // r, size // r) for c, r in zip(DIMS, (4, 8, 16, 32))]
    for got, want in zip(maps, stage_outputs(clf, x)):
        assert torch.equal(got, want)


def test_features_only_out_indices_prunes_the_tail():
    clf = seeded("biformer_t")
    feat = timm.create_model("biformer_t", features_only=True, out_indices=(1, 2), pretrained=True,
                             pretrained_cfg_overlay=dict(state_dict=clf.state_dict())).eval()
    assert feat.feature_info.channels() == [128, 256] and feat.feature_info.reduction() == [8, 16]
    assert len(feat.model.stages) == 3  # stage 4, the head norm and the head are gone
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        maps = feat(x)
    want = stage_outputs(clf, x)
    assert len(maps) == 2 and torch.equal(maps[0], want[1]) and torch.equal(maps[1], want[2])


def test_forward_intermediates_final_is_forward_features():
    m = seeded("debiformer_t_swap_mhsa")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, inter = m.forward_intermediates(x, indices=[-1], norm=True)
        assert torch.equal(final, m.forward_features(x)) and torch.equal(inter[0], final)
        early = m.forward_intermediates(x, indices=2, stop_early=True, intermediates_only=True)
    assert [t.shape[1] for t in early] == [256, 512]
    with pytest.raises(ValueError, match=r"indices=\[4\] is not allowed"):
        m.forward_intermediates(x, indices=[4])


@pytest.mark.parametrize("size", [224, 256])
def test_forward_backward(size):
    """timm-built DeBiFormer-T trains at 224 and at 256 (every region attention padding its grids: 64, 32, 16 and 8
    are no multiples of 7; 384 padded the same way at 2.3x the pixels)."""
    torch.manual_seed(0)
    m = timm.create_model("debiformer_t", num_classes=10, drop_path_rate=0.1)
    logits = m(torch.randn(1, 3, size, size))
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a finite gradient: {no_grad[:5]}"


@pytest.mark.parametrize("name", T_SIZED)
def test_any_multiple_of_32_runs(name):
    """224-built presets at inputs whose grids fit no region count (64×96: grids 16×24 ... 2×3)."""
    m = seeded(name)
    with torch.no_grad():
        out = m(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", T_SIZED + BIG)
@pytest.mark.parametrize("size", [256, 320, 384])
def test_every_preset_at_larger_inputs(name, size):
    m = seeded(name)
    with torch.no_grad():
        out = m(torch.randn(1, 3, size, size))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["debiformer_t", "biformer_t"])
def test_padding_changes_nothing_at_224(name):
    """Slots pad only where a grid does not fit: at 224 the auto_pad model equals the strict (official) one bit for
    bit, and at 256 only the auto_pad model runs."""
    padded = seeded(name)
    strict = models.create_model(name, attn_overrides={"auto_pad": False}).eval()
    strict.load_state_dict(padded.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(padded(x), strict(x))
        with pytest.raises(ValueError, match="auto_pad"):
            strict(torch.randn(1, 3, 256, 256))


def test_img_size_reaches_the_preset():
    """timm's img_size kwarg is the preset's: the swap presets size their slot configs (here DAT's table) by it."""
    m224 = timm.create_model("debiformer_t_swap_dat", device="meta")
    m256 = timm.create_model("debiformer_t_swap_dat", img_size=(256, 256), device="meta")  # timm's (h, w) form
    assert m224.stages[0][0].attn1.config.rpe_size == 56 and m256.stages[0][0].attn1.config.rpe_size == 64
