""""Did you mean" has one rule: attentions.suggest (for the attentions package, which never imports attnbench) and
attnbench.core.hints (which must not import attentions, i.e. torch, before the CLI checks its arguments) agree."""
from __future__ import annotations

import pytest

from attentions import suggest
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
def test_both_copies_of_the_rule_agree(word, near):
    assert suggest.closest(word, OPTIONS) == hints.closest(word, OPTIONS) == near
    expected = f"; did you mean {near!r}?" if near else ""
    assert suggest.did_you_mean(word, OPTIONS) == hints.did_you_mean(word, OPTIONS) == expected
