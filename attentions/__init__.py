"""attentions: five vision attention mechanisms behind one shape contract.

``forward(x)`` takes and returns (B, H, W, C). Build by name::

    import attentions
    attentions.available()                  # ['agent', 'bra', 'dat', 'dbra', 'mhsa']
    attn = attentions.build("dbra", dim=64, num_heads=2)

This package never imports ``attnbench``: it stands alone.
"""
from .base import Attention, OfficialStateDictError
from .config import AttentionConfig, ConfigError
from .cost import Cost
from .registry import UnknownAttentionError, available, build, from_official, register, resolve

__all__ = [
    "Attention",
    "AttentionConfig",
    "ConfigError",
    "Cost",
    "OfficialStateDictError",
    "UnknownAttentionError",
    "available",
    "build",
    "from_official",
    "register",
    "resolve",
]
