"""flops: exact counts of each counter on toy modules, agreement of the three on MHSA, uncounted ops listed."""
import pytest
import torch
from metric_toys import ToyBmm, ToyConv, ToyCumsum, ToyLinear, ToyRouting, ToySdpa, make_ctx

import attentions
from attnbench.metrics import get_metric
from attnbench.metrics.base import MetricContext
from attnbench.metrics.flops import count_fvcore, count_torch, uncounted_ops

measure = get_metric("flops")


def test_linear_exact_and_batch_one():
    H, W, C, D = 3, 5, 8, 16
    row = measure(make_ctx(lambda: ToyLinear(C, D), H=H, W=W, dim=C, batch=4))
    # counted at batch 1 whatever the cell's batch; fvcore does not count the bias
    assert row["macs_fvcore"] == H * W * C * D
    assert row["flops_torch"] == 2 * H * W * C * D
    assert row["flops_uncounted_ops"] == ""
    assert "macs_analytic" not in row and "keys_per_query" not in row  # no cost model


def test_bmm_exact():
    H, W, C = 3, 5, 8
    row = measure(make_ctx(ToyBmm, H=H, W=W, dim=C))
    macs = H * (W * C * W) + H * (W * W * C)
    assert (row["macs_fvcore"], row["flops_torch"]) == (macs, 2 * macs)


def test_conv_exact():
    H, W, C, D = 6, 4, 8, 4
    row = measure(make_ctx(lambda: ToyConv(C, D), H=H, W=W, dim=C))
    macs = H * W * D * C * 9 + H * W * D * 9  # dense 3x3, then depthwise 3x3 (padding keeps H x W)
    assert (row["macs_fvcore"], row["flops_torch"]) == (macs, 2 * macs)


def test_sdpa_handle_counts_both_matmuls():
    H, W, nk, d, dv = 3, 4, 5, 4, 3
    row = measure(make_ctx(lambda: ToySdpa(nk, d, dv), H=H, W=W, dim=8))
    rows = 2 * H * W  # heads x queries
    macs = rows * nk * d + rows * nk * dv
    assert row["macs_fvcore"] == macs
    assert row["flops_torch"] == 2 * macs  # CPU SDPA mapped to torch's own formula
    assert row["flops_uncounted_ops"] == ""


def test_zero_cost_ops_and_softmax_setting():
    H, W, C = 2, 3, 8
    row = measure(make_ctx(ToyRouting, H=H, W=W, dim=C))
    assert (row["macs_fvcore"], row["flops_torch"], row["flops_uncounted_ops"]) == (0, 0, "")
    row = measure(make_ctx(ToyRouting, H=H, W=W, dim=C, settings={"flops": {"softmax_macs_per_element": 3}}))
    assert row["macs_fvcore"] == 3 * H * W * C  # softmax over (1, H*W, C)


def test_uncounted_ops_listed():
    row = measure(make_ctx(ToyCumsum, H=2, W=3, dim=8))
    assert row["flops_uncounted_ops"] == "aten::cumsum"
    assert row["macs_fvcore"] == 2 * 3 * 8 * 8  # the Linear is still counted


def test_uncounted_ops_drops_what_torch_counted():
    assert uncounted_ops({"aten::cumsum": 1, "mylib::kernel": 2}, {"mylib::kernel": 10}) == ["aten::cumsum"]
    assert uncounted_ops({"mylib::kernel": 2}, {"mylib::kernel": 0}) == ["mylib::kernel"]


def _mhsa_ctx(impl, H=7, W=6, C=32, m=2):
    cfg = {"dim": C, "num_heads": m, "impl": impl}
    make = lambda: attentions.build("mhsa", **cfg)  # noqa: E731
    return MetricContext("mhsa", cfg, make, 2, H, W, torch.float32, torch.device("cpu"))


@pytest.mark.parametrize("impl", ["torch", "sdpa"])
def test_three_counters_agree_on_mhsa(impl):
    H, W, C = 7, 6, 32
    N = H * W
    row = measure(_mhsa_ctx(impl, H, W, C))
    expected = 4 * N * C * C + 2 * N * N * C  # qkv + proj, then QK^T and AV
    assert row["macs_fvcore"] == row["macs_analytic"] == expected
    assert row["flops_torch"] == 2 * expected
    assert row["macs_analytic_projections"] == 4 * N * C * C
    assert row["macs_analytic_attention"] == 2 * N * N * C
    assert row["macs_analytic_routing"] == 0
    assert row["keys_per_query"] == float(N)
    assert row["flops_uncounted_ops"] == ""


def test_counters_direct_api_by_operator():
    m = ToyLinear(8, 4).eval()
    x = torch.randn(1, 2, 2, 8)
    fv = count_fvcore(m, x)
    assert fv.total == 4 * 8 * 4 and fv.by_operator == {"linear": 128} and fv.unsupported == {}
    total, by_op = count_torch(m, x)
    assert total == 256 and by_op == {"aten::addmm": 256}


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"settings.flops.softmax: unknown key; did you mean "
                                         r"'softmax_macs_per_element'\? \(allowed: "):
        measure(make_ctx(ToyLinear, settings={"flops": {"softmax": 1}}))
    with pytest.raises(ValueError, match="settings.flops.device: expected 'cpu' or 'cell', got 'gpu'"):
        measure(make_ctx(ToyLinear, settings={"flops": {"device": "gpu"}}))


# fvcore MACs (M) and params of the official DAT/Agent/MHSA modules at these settings, measured by running the
# official code (shared/design/dat-and-agent.md, A.9 table); FlopCounterMode FLOPs (M) likewise.
PAPER_COUNTS = [
    ("mhsa", {"dim": 96, "num_heads": 3}, 56, 2003.8, 4007.7, 37_248),
    ("dat", {"dim": 96, "num_heads": 3, "n_groups": 1, "stride": 8, "offset_kernel": 9, "rpe_size": 56}, 56,
     90.5, 177.2, 82_467),
    ("agent", {"dim": 96, "num_heads": 3, "agent_num": 9, "window_size": 56}, 56, 130.1, 258.3, 46_902),
    ("mhsa", {"dim": 384, "num_heads": 12}, 14, 145.1, 290.2, 591_360),
    ("dat", {"dim": 384, "num_heads": 12, "n_groups": 4, "stride": 2, "offset_kernel": 5, "rpe_size": 14}, 14,
     80.8, 160.3, 602_988),
    ("agent", {"dim": 384, "num_heads": 12, "agent_num": 49, "window_size": 14}, 14, 132.0, 262.1, 685_752),
]


@pytest.mark.parametrize("name, cfg, grid, macs_m, torch_m, n_params", PAPER_COUNTS)
def test_reproduces_official_fvcore_counts(name, cfg, grid, macs_m, torch_m, n_params):
    ctx = MetricContext(name, cfg, lambda: attentions.build(name, **cfg), 1, grid, grid, torch.float32,
                        torch.device("cpu"))
    row = measure(ctx)
    assert row["macs_fvcore"] / 1e6 == pytest.approx(macs_m, abs=0.05)
    assert row["flops_torch"] / 1e6 == pytest.approx(torch_m, abs=0.05)
    assert get_metric("params")(ctx)["params"] == n_params
