"""Session-wide test setup.

Triton interpreter: without a GPU, the Triton kernels in ``attentions.kernels`` are tested on CPU tensors under
``TRITON_INTERPRET=1``. ``triton.jit`` reads that variable when it decorates a kernel, i.e. when
``attentions.kernels`` is first imported, so it is set here, before any test module imports anything. It is set
only when CUDA is unavailable (on a GPU machine the kernels compile for the GPU) and only if the user has not set
it already (``TRITON_INTERPRET=0`` is respected). The kernel tests live in ``tests/kernels/`` (docs/kernels.md).
"""
from __future__ import annotations

import gc
import os
import warnings

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def cpu_flushes_denormals() -> bool:
    """Whether this CPU flushes subnormals when asked, seen from arithmetic (not from the flag torch returns):
    a subnormal times one is zero only while flushing is on. The latency metric must record exactly this."""
    torch.set_flush_denormal(True)
    try:
        return bool((torch.full((4,), 1e-40) * torch.ones(4)).eq(0).all())
    finally:
        torch.set_flush_denormal(False)


@pytest.fixture(scope="session")
def plain_fvcore_macs():
    """``count(name)``: fvcore's MACs of ``attentions.models.create_model(name)`` (seed 0) at 224 px, batch 1, eval
    mode, with no custom handles -- how the papers counted. Each model is traced once per session (1-5 s each):
    tests/models checks the published figures with it, tests/engine that attnbench's handles add nothing."""
    from fvcore.nn import FlopCountAnalysis

    from attentions import models

    counts: dict[str, int] = {}

    def count(name: str) -> int:
        if name not in counts:
            torch.manual_seed(0)
            model = models.create_model(name).eval()
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                analysis = FlopCountAnalysis(model, torch.zeros(1, 3, 224, 224))
                analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
                counts[name] = int(analysis.total())
        return counts[name]

    return count


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only when the marker expression names them (``-m slow``), as the README says."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with python3 -m pytest -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Freeze what earlier tests left alive out of the garbage collector's reach (after collecting the garbage among
    it): the engine runs a full collection after a failed cell and before every latency measurement, and over the
    heap of a whole session (torch, pandas, matplotlib, every test module) each took ~0.3 s, 30 s of the engine and
    metric tests. A test's own objects are collected as before; frozen objects are still freed by reference
    counting."""
    gc.collect()
    gc.freeze()
