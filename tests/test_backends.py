"""Backend choice (attentions.backends): "auto" takes the first fast path whose can_run_* check passes and says
why; an explicit backend that cannot run is an error naming the reason; the module really runs what was chosen;
the results row records it."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attentions
from attentions import backends
from attentions.backends import BackendError, choose
from attnbench.suite.cells import Cell
from attnbench.engine.execute import CellRunner

STAGE1 = dict(dim=64, num_heads=2)  # DBRA's defaults are DeBiFormer stage 1: n_win 7, offset_stride 8


@pytest.fixture
def cuda_predicate_true(monkeypatch):
    """Pretend every device is CUDA: the checks' other conditions (dtype, the kernel importing) still apply."""
    monkeypatch.setattr(backends, "on_cuda", lambda device: True)


def test_auto_on_cpu_is_torch_and_says_why():
    x = torch.zeros(1, 4, 4, 8)
    for path in ("routed", "pixel_agent"):
        c = choose(path, "auto", x, "t")
        assert c.backend == "torch" and c.why == "auto: triton: the input is on cpu, not CUDA"
    assert choose("attention", "auto", x, "t") == backends.Choice("sdpa", "auto: sdpa can run")
    assert choose("routed", "official", x, "t") == backends.Choice("official", "requested")


def test_dbra_at_a_128_grid_has_441_agents_and_auto_takes_the_kernel_where_it_can(cuda_predicate_true):
    """A 512² image at stage 1 is a 128x128 token grid: 21x21 = 441 agents after padding to n_win. The
    pixel-to-agent kernel streams agents in tiles of <= 256 (tests/kernels cover 441 against the torch
    reference), so on CUDA "auto" takes Triton there; what it cannot run (float64) falls back to torch."""
    dbra = attentions.build("dbra", **STAGE1)
    Hp, Wp, Hk, Wk, Hg, Wg = dbra.grid_sizes(128, 128)
    assert Hg * Wg == 441
    x = torch.zeros(1, 128, 128, 64)
    assert dbra._impls(x) == ("triton", "triton")
    assert backends.ran(dbra) == {"backend": "pixel_agent=triton;routed=triton",
                                  "backend_why": "pixel_agent: auto: triton can run;routed: auto: triton can run"}
    x64 = x.double()
    assert dbra._impls(x64) == ("torch", "torch")
    why = backends.ran(dbra)["backend_why"]
    assert why.count("triton: dtype float64 is not one of float32, bfloat16, float16") == 2


def test_auto_falls_back_when_the_kernel_does_not_import(cuda_predicate_true, monkeypatch):
    monkeypatch.setattr(backends, "_kernel_missing", lambda module: f"{module}: no triton")
    c = choose("pixel_agent", "auto", torch.zeros(1), "t")
    assert c == backends.Choice("torch", "auto: triton: pixel_agent_attention: no triton")


def test_an_explicit_backend_that_cannot_run_is_an_error_naming_the_reason(monkeypatch):
    x = torch.zeros(1, 14, 14, 32, dtype=torch.float64)
    dbra = attentions.build("dbra", dim=32, num_heads=2, impl="triton").double()
    with pytest.raises(BackendError, match=r"dbra: impl='triton' cannot run the routed attention: dtype float64 "
                                           r"is not one of float32, bfloat16, float16; use impl='auto'"):
        dbra(x)
    # on CPU without the Triton interpreter, the device is the reason
    import attentions.kernels._common as common

    monkeypatch.setattr(common, "interpreted", lambda kernel: False)
    with pytest.raises(BackendError, match="bra: impl='triton' cannot run the routed attention: the input is on "
                                           "cpu, not CUDA"):
        attentions.build("bra", dim=32, num_heads=2, n_win=2, impl="triton")(torch.zeros(1, 4, 4, 32))


def test_mhsa_runs_the_backend_it_chose(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("sdpa called")

    monkeypatch.setattr(F, "scaled_dot_product_attention", refuse)
    x = torch.randn(1, 3, 3, 8)
    attentions.build("mhsa", dim=8, num_heads=2, impl="torch")(x)  # the math path: never SDPA
    with pytest.raises(AssertionError, match="sdpa called"):
        attentions.build("mhsa", dim=8, num_heads=2)(x)  # auto: SDPA


def test_bra_runs_the_backend_it_chose(cuda_predicate_true, monkeypatch):
    import attentions.bra as bra_mod

    chosen = []
    real = bra_mod.routed_attention
    monkeypatch.setattr(bra_mod, "routed_attention", lambda *a: chosen.append(a[-1]) or real(*a[:-1], "torch"))
    attentions.build("bra", dim=32, num_heads=2, n_win=2)(torch.zeros(1, 4, 4, 32))
    attentions.build("bra", dim=32, num_heads=2, n_win=2).double()(torch.zeros(1, 4, 4, 32, dtype=torch.float64))
    assert chosen == ["triton", "torch"]


def test_the_row_records_the_backend_and_why():
    cell = Cell("s", "dbra", "dbra", {"dim": 32, "num_heads": 2, "n_win": 2}, 8, 8, 1, "float32", "cpu",
                "forward", "eager")
    outcome = CellRunner(["params"], {}).measure(cell)
    assert outcome.status == "ok", outcome.error
    assert outcome.columns["backend"] == "pixel_agent=torch;routed=torch"
    assert outcome.columns["backend_why"] == ("pixel_agent: auto: triton: the input is on cpu, not CUDA;"
                                              "routed: auto: triton: the input is on cpu, not CUDA")
    agent = Cell("s", "agent", "agent", {"dim": 32, "num_heads": 2}, 8, 8, 1, "float32", "cpu", "forward", "eager")
    assert "backend" not in CellRunner(["params"], {}).measure(agent).columns  # no fast path, no column


@pytest.mark.parametrize("name, config", [("mhsa", dict(dim=16, num_heads=2)),
                                          ("dbra", dict(dim=16, num_heads=2, n_win=2))])
def test_the_choice_compiles_into_one_graph(name, config):
    """The checks import modules and read flags; under torch.compile the choice is a graph constant, so a compiled
    cell still has no graph break (fullgraph) and computes what eager does."""
    torch._dynamo.reset()
    module = attentions.build(name, **config)
    x = torch.randn(1, 8, 8, 16)
    torch.testing.assert_close(torch.compile(module, backend="eager", fullgraph=True)(x), module(x))


def test_the_constant_mark_is_what_torch_compiler_sets():
    """backends marks its graph constant by hand (the decorator would import torch._dynamo in every process that
    imports attentions); the mark must stay exactly what torch.compiler.assume_constant_result sets."""
    def probe():
        return None

    marked = vars(torch.compiler.assume_constant_result(probe))
    assert marked and {k: vars(backends._constant_backend).get(k) for k in marked} == marked
