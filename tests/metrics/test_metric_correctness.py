"""correctness gate: NaN and Inf are caught and counted; a finite output passes."""
import pytest
import torch
from metric_toys import ToyLinear, make_ctx
from torch import nn

from attnbench.metrics.correctness import NonFiniteOutputError, check_finite


class Poison(nn.Module):
    """Puts ``n_nan`` NaNs and ``n_inf`` infinities (alternating signs) into the first output elements."""

    def __init__(self, n_nan, n_inf, as_tuple=False):
        super().__init__()
        self.n_nan, self.n_inf, self.as_tuple = n_nan, n_inf, as_tuple

    def forward(self, x):
        y = x.clone().reshape(-1)
        y[: self.n_nan] = float("nan")
        signs = torch.tensor([1.0, -1.0]).repeat(self.n_inf)[: self.n_inf]
        y[self.n_nan : self.n_nan + self.n_inf] = signs * float("inf")
        y = y.view_as(x)
        return (y, x) if self.as_tuple else y


def test_finite_output_passes():
    m = ToyLinear(8, 8)
    check_finite(make_ctx(lambda: m, batch=2), m)
    assert not m.training


@pytest.mark.parametrize("n_nan, n_inf", [(3, 0), (0, 2), (1, 5)])
def test_nan_and_inf_counted(n_nan, n_inf):
    ctx = make_ctx(None, H=2, W=3, dim=4, batch=2)
    with pytest.raises(NonFiniteOutputError, match=rf"^non-finite output: {n_nan} NaN, {n_inf} Inf of 48 elements$"):
        check_finite(ctx, Poison(n_nan, n_inf))


def test_tuple_outputs_all_checked():
    ctx = make_ctx(None, H=2, W=3, dim=4, batch=1)
    with pytest.raises(NonFiniteOutputError, match="1 NaN, 1 Inf of 48 elements"):
        check_finite(ctx, Poison(1, 1, as_tuple=True))


def test_check_uses_no_grad_and_cell_input():
    seen = {}

    class Spy(nn.Module):
        def forward(self, x):
            seen.update(grad=torch.is_grad_enabled(), shape=tuple(x.shape), req=x.requires_grad)
            return x

    ctx = make_ctx(None, H=2, W=3, dim=4, batch=5, pass_="forward_backward")
    check_finite(ctx, Spy())
    assert seen == {"grad": False, "shape": (5, 2, 3, 4), "req": False}
