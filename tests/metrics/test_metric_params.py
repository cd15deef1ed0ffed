"""params: exact counts; buffers excluded, shared parameters once, frozen ones not trainable."""
import torch
from metric_toys import make_ctx
from torch import nn

from attnbench.metrics import get_metric
from attnbench.metrics.params import count_params


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(7, 5)  # 7*5 + 5 = 40
        self.b = nn.Linear(5, 3, bias=False)  # 15
        self.frozen = nn.Parameter(torch.zeros(2, 3), requires_grad=False)  # 6, not trainable
        self.shared = self.a  # the same Linear reachable twice: counted once
        self.register_buffer("table", torch.zeros(100))  # a buffer: not a parameter


def test_params_exact_counts():
    assert count_params(Mixed()) == (40 + 15 + 6, 40 + 15)


def test_params_measure_columns():
    row = get_metric("params")(make_ctx(Mixed))
    assert row == {"params": 61, "params_trainable": 55}
