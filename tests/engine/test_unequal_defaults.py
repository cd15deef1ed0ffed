"""No silent unequal comparison (issue 19, item 6): a user attention whose argument is `heads` (not `num_heads`)
ran with its own 8 heads against mhsa's 2, the row recorded `{'dim': 64}`, and nothing was said."""
from __future__ import annotations

import warnings

from click.testing import CliRunner

import engine_fakes as fakes

from attnbench.engine import runner
from attnbench.cli import main
from attnbench.core.results import read_rows
from attnbench.suite.load import load_suite

USER_MODULE = '''
import torch
from torch import nn


class HeadsAttention(nn.Module):
    """A user's attention that spells the head count `heads`."""

    def __init__(self, dim, heads=8, qkv_bias=True):
        super().__init__()
        self.dim, self.heads = dim, heads
        self.proj = nn.Linear(dim, dim, bias=qkv_bias)

    def forward(self, x):
        return self.proj(x)
'''


def suite(tmp_path, monkeypatch, **config) -> dict:
    (tmp_path / "user_heads.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = fakes.tiny_suite(attentions=[{"name": fakes.dotted("Tiny"), "label": "tiny"},
                                        {"name": "user_heads:HeadsAttention", "label": "mine", "config": config}],
                            metrics=["shape"], defaults={"dim": 8, "num_heads": 2})
    data["axes"].update(resolution=[4], batch=[1], **{"pass": ["forward"]})
    return data


def test_one_warning_per_attention_names_the_default_it_does_not_take(fake_metrics, write_suite, tmp_path,
                                                                      monkeypatch):
    path = write_suite(suite(tmp_path, monkeypatch))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_suite(path)
    texts = [str(w.message) for w in caught]
    assert len(texts) == 1, texts  # tiny takes both defaults: no warning for it
    assert texts[0].startswith("mine does not take the suite default(s) num_heads=2 (it takes 'heads', default 8): "
                               "it runs with its own values")
    # given in the entry's own config, it is no longer a default the module misses
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_suite(write_suite(suite(tmp_path, monkeypatch, heads=2), "b.yaml"))
    assert not caught


def test_cli_prints_the_warning_once(fake_metrics, write_suite, tmp_path, monkeypatch):
    result = CliRunner().invoke(main, ["run", str(write_suite(suite(tmp_path, monkeypatch))), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.count("warning: mine does not take the suite default(s) num_heads=2") == 1


def test_rows_record_the_effective_arguments_with_the_signatures_defaults(fake_metrics, write_suite, tmp_path,
                                                                        monkeypatch):
    path = write_suite(suite(tmp_path, monkeypatch))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner.run(runner.plan(str(path), out=str(tmp_path / "run"), cuda_available=False), progress=False,
                   isolate=False)
    tiny, mine = read_rows(tmp_path / "run")
    assert mine["status"] == "ok" and mine["config"] == {"dim": 8}
    assert mine["effective_config"] == {"dim": 8, "heads": 8, "qkv_bias": True}
    assert tiny["effective_config"] == {"dim": 8, "num_heads": 2, "scale": 1.0, "even_only": False,
                                        **{k: v for k, v in tiny["effective_config"].items()
                                           if k not in ("dim", "num_heads", "scale", "even_only")}}
