"""The registry: names, dotted paths, entry points, errors, and config validation shared by every mechanism."""
from __future__ import annotations

from importlib import metadata

import pytest
import torch
from torch import nn

import attentions
from attentions import registry
from attentions.config import ConfigError

BUILTINS = ["agent", "bra", "dat", "dbra", "mhsa"]


class Doubler(nn.Module):
    """A third-party attention that follows the shape contract without subclassing anything of ours."""

    def __init__(self, dim: int = 8, factor: float = 2.0):
        super().__init__()
        self.dim, self.factor = dim, factor

    def forward(self, x):
        return x * self.factor


def test_all_five_builtins_are_registered():
    assert [n for n in attentions.available() if n in BUILTINS] == BUILTINS


def test_available_filters_with_a_pattern():
    assert attentions.available("d*") == [n for n in attentions.available() if n.startswith("d")]
    assert "mhsa" not in attentions.available("d*")


def test_build_returns_the_registered_class_with_its_config():
    m = attentions.build("mhsa", dim=32, num_heads=4, qkv_bias=False)
    assert type(m) is attentions.resolve("mhsa")
    assert (m.config.dim, m.config.num_heads, m.config.qkv_bias) == (32, 4, False)
    assert m.qkv.bias is None


def test_dotted_path_builds_a_third_party_module():
    m = attentions.build(f"{__name__}:Doubler", dim=4, factor=3.0)
    x = torch.ones(1, 2, 2, 4)
    assert torch.equal(m(x), 3 * x)


@pytest.mark.parametrize(
    "path, message",
    [
        ("no_such_pkg_xyz.mod:Cls", "cannot import module 'no_such_pkg_xyz.mod'"),
        (f"{__name__}:Missing", "has no attribute 'Missing'"),
        (f"{__name__}:BUILTINS", "is not a torch.nn.Module subclass"),
    ],
)
def test_bad_dotted_paths_say_what_is_wrong(path, message):
    with pytest.raises(attentions.UnknownAttentionError, match=message):
        attentions.resolve(path)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(attentions.UnknownAttentionError, match="did you mean 'dbra'"):
        attentions.build("dbar")


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):

        @attentions.register("mhsa")
        class Other(nn.Module):
            pass


def test_entry_point_group_is_discovered(monkeypatch):
    ep = metadata.EntryPoint(name="ep_doubler", value=f"{__name__}:Doubler", group="attentions")

    def fake_entry_points(group=None):
        return [ep] if group == "attentions" else []

    monkeypatch.setattr(registry.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_REGISTRY", registry._REGISTRY.copy())
    assert "ep_doubler" in attentions.available()
    assert isinstance(attentions.build("ep_doubler", dim=4), Doubler)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dim=64, num_heads=3), r"mhsa: num_heads=3 is not allowed: expected a divisor of dim=64"),
        (dict(dim=0), r"mhsa: dim=0 is not allowed"),
        (dict(num_head=2),
         r"unknown parameter 'num_head'; did you mean 'num_heads'\? \(allowed: dim, num_heads, qkv_bias, impl\)"),
        (dict(dim=64.0), r"dim=64.0 has type float, expected int"),
        (dict(qkv_bias="yes"), r"qkv_bias='yes' has type str, expected bool"),
        (dict(dim=True), r"dim=True has type bool, expected int"),
    ],
)
def test_config_errors_name_the_parameter(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        attentions.build("mhsa", **kwargs)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [  # the shared validators of attentions.config and attentions.routing, one message for each concept
        ("dat", dict(rpe_size=(3, True)), r"dat: rpe_size=\(3, True\) is not allowed: expected a positive int or a pair"),
        ("dbra", dict(rpe_size=(0, 7)), r"dbra: rpe_size=\(0, 7\) is not allowed: expected a positive int or a pair"),
        ("agent", dict(window_size=(7, 0)), r"agent: window_size=\(7, 0\) is not allowed: expected a positive int"),
        ("dat", dict(n_groups=3), r"dat: n_groups=3 is not allowed: expected a divisor of num_heads=2"),
        ("dbra", dict(n_groups=3), r"dbra: n_groups=3 is not allowed: expected a divisor of num_heads=2"),
        ("bra", dict(topk=50), r"bra: topk=50 is not allowed: expected an integer in \[1, n_win²=49\] \(n_win=7\)"),
        ("dbra", dict(topk=0), r"dbra: topk=0 is not allowed: expected an integer in \[1, n_win²=49\]"),
        ("bra", dict(lce_kernel=4), r"bra: lce_kernel=4 is not allowed: expected 0 \(no LCE\) or an odd integer >= 1"),
        ("dbra", dict(lce_kernel=-1), r"dbra: lce_kernel=-1 is not allowed: expected 0 \(no LCE\) or an odd"),
        ("dat", dict(offset_kernel=4), r"dat: offset_kernel=4 is not allowed: expected an odd integer >= 1"),
        ("dbra", dict(offset_kernel=0), r"dbra: offset_kernel=0 is not allowed: expected an odd integer >= 1"),
    ],
)
def test_shared_hyperparameters_get_one_message_in_every_mechanism(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        attentions.build(name, **kwargs)


def test_the_type_argument_names_the_config_and_build_receives_it():
    from dataclasses import dataclass

    from attentions.base import Attention
    from attentions.config import AttentionConfig

    @dataclass(frozen=True)
    class ScaleConfig(AttentionConfig):
        factor: float = 2.0

    class Scale(Attention[ScaleConfig]):
        def build(self, c: ScaleConfig) -> None:
            self.seen = c

        def forward(self, x):
            return x * self.config.factor

    class OldStyle(Attention):  # Config set by hand and layers made in __init__ still work
        Config = ScaleConfig

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.made_after = self.config.factor

    m = Scale(factor=3.0)
    assert Scale.Config is ScaleConfig and m.seen is m.config and m.config.factor == 3.0
    assert OldStyle(factor=5.0).made_after == 5.0
    with pytest.raises(ConfigError, match="unknown parameter 'factr'; did you mean 'factor'"):
        Scale(factr=1.0)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_from_official_rejects_modules_without_a_converter():
    with pytest.raises(TypeError, match="no official-weights converter"):
        attentions.from_official(f"{__name__}:Doubler", {}, dim=4)


def test_attentions_and_backbones_are_two_namespaces_over_one_registry():
    """One mechanism (attentions/registry_base.py): both namespaces refuse a second holder of a name and answer an
    unknown name with their own error class and the closest name."""
    from attentions.models import _registry as models
    from attentions.registry_base import Registry

    assert type(registry._REGISTRY) is Registry and type(models._MODELS) is Registry
    with pytest.raises(attentions.UnknownAttentionError, match=r"unknown attention 'mhsaa'; did you mean 'mhsa'\?"):
        attentions.resolve("mhsaa")
    with pytest.raises(models.UnknownModelError, match=r"unknown model 'debiformer_tt'; did you mean 'debiformer_t'"):
        models.create_model("debiformer_tt")
    spare = Registry("thing", KeyError)
    spare.add("a", int)
    spare.add("a", int)  # the same holder again is fine
    with pytest.raises(ValueError, match="thing 'a' is already registered to int"):
        spare.add("a", float)
    assert spare.names("a*") == ["a"] and "a" in spare and "a" not in spare.copy().names("b*")
