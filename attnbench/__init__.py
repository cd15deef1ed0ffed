"""attnbench: measure and compare the attentions of the ``attentions`` zoo (FLOPs, params, latency, memory, accuracy).

Depends on ``attentions`` through its public API only (``available``, ``build``, ``resolve``, ``from_official``).
"""
__version__ = "0.1.0"
