""""Did you mean" has one rule, namehint.closest: the attentions package's errors and attnbench's hints use it (the
same function, not a copy), and it picks what its docstring says."""
from __future__ import annotations

import pytest

import namehint
from attentions import config as attention_config, registry_base
from attnbench.core import hints

OPTIONS = ["dbra", "bra", "mhsa", "num_heads", "min_time_s", "min_repeats", "softmax_macs_per_element", "report",
           "resolution_sweep", "debiformer_t", "debiformer_s"]


@pytest.mark.parametrize("word, near", [
    ("DBRA", "dbra"),                                # case
    ("rep", "report"),                               # a prefix of one option
    ("softmax", "softmax_macs_per_element"),         # a prefix, though difflib finds nothing
    ("min", None),                                   # a prefix of two: no prefix match, nothing close
    ("num_head", "num_heads"),                       # difflib
    ("debiformr_s", "debiformer_s"),
    ("zzz", None),
])
def test_the_one_rule(word, near):
    assert namehint.closest(word, OPTIONS) == near
    expected = f"; did you mean {near!r}?" if near else ""
    assert namehint.did_you_mean(word, OPTIONS) == expected


def test_every_did_you_mean_is_that_rule():
    assert hints.closest is namehint.closest and hints.did_you_mean is namehint.did_you_mean
    assert attention_config.did_you_mean is namehint.did_you_mean is registry_base.did_you_mean
