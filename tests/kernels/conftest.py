"""Kernel-test setup: on a GPU, float32 matmuls and convolutions in the references run in full float32.

The kernel tests compare float32 kernels with torch references at atol 1e-4; TF32 (10-bit mantissa) in a cuBLAS
or cuDNN reference (grid_sample's neighbours, a conv in a module test) would make those comparisons flaky. The
kernels themselves use ``input_precision="ieee"`` for float32 (attentions/kernels/_common.py). Off CUDA this is a
no-op. The interpreter itself is switched on by the top-level tests/conftest.py.
"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _no_tf32():
    if not torch.cuda.is_available():
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
