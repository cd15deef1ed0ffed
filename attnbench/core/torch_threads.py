"""torch's intra-op thread count for one block of work, restored after it.

Shared by the runner (a suite's ``settings.threads``, for a whole cell), the latency metric
(``settings.latency.threads``) and accuracy jobs (``settings.accuracy.threads``): each sets the count for what it
measures and must leave the process as it found it, because the next cell runs in the same process.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

__all__ = ["use_threads"]


@contextlib.contextmanager
def use_threads(threads: Optional[int]) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block and the previous count after it; ``None`` (or 0) leaves
    the count alone."""
    if not threads:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
