"""Metrics: one module per metric, each with ``measure(ctx: MetricContext) -> dict`` of flat columns.

``METRICS`` maps a suite's metric name to its module under ``attnbench.metrics``; the runner looks a metric up
here and knows nothing else about it.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from .base import MetricContext

__all__ = ["METRICS", "MetricContext", "get_metric"]

#: suite metric name -> module name under attnbench.metrics
METRICS = {
    "params": "params",
    "flops": "flops",
    "latency": "latency",
    "memory": "memory",
    "accuracy": "accuracy",
    "published": "published",
    "breakdown": "breakdown",
    "capacity": "capacity",
}


def get_metric(name: str) -> Callable[[MetricContext], dict[str, Any]]:
    """The ``measure`` function of metric ``name``."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return importlib.import_module(f"attnbench.metrics.{METRICS[name]}").measure
