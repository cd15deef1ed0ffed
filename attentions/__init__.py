"""attentions: five vision attention mechanisms behind one shape contract.

``forward(x)`` takes and returns (B, H, W, C). Build by name::

    import attentions
    attentions.available()                  # ['agent', 'bra', 'dat', 'dbra', 'mhsa']
    attn = attentions.build("dbra", dim=64, num_heads=2)
    with attentions.inspect(attn) as rec:   # what it computed: routing, sampling points, agent maps
        attn(x)

This package never imports ``attnbench``: it stands alone.
"""
from .base import Attention, OfficialStateDictError
from .config import AttentionConfig, ConfigError
from .cost import Cost
from .inspect import Recorder, inspect
from .registry import UnknownAttentionError, available, build, from_official, register, resolve

__all__ = [
    "Attention",
    "AttentionConfig",
    "ConfigError",
    "Cost",
    "OfficialStateDictError",
    "Recorder",
    "UnknownAttentionError",
    "available",
    "build",
    "from_official",
    "inspect",
    "register",
    "resolve",
]
