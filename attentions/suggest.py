""""Did you mean": the nearest of some names to a mistyped one, for this package's error messages.

The rule, the same as :func:`attnbench.core.hints.closest` (pinned by ``tests/test_suggest.py``; this package never
imports ``attnbench``, and ``attnbench.core.hints`` must not import this package, which imports torch): the only option
equal to the word but for case, else the only option the word (three characters or more) is a prefix of, else
:mod:`difflib`'s closest above a ratio of 0.6.
"""
from __future__ import annotations

import difflib
from typing import Iterable, Optional

__all__ = ["closest", "did_you_mean"]


def closest(word: str, options: Iterable[str], cutoff: float = 0.6) -> Optional[str]:
    """The option nearest to ``word`` by the rule of the module docstring, or None."""
    options = list(dict.fromkeys(options))
    same_case = [o for o in options if o.lower() == word.lower()]
    if len(same_case) == 1:
        return same_case[0]
    prefixed = [o for o in options if len(word) >= 3 and o.startswith(word)]
    if len(prefixed) == 1:
        return prefixed[0]
    close = difflib.get_close_matches(word, options, n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the nearest option, or ``""`` when none is near."""
    near = closest(word, options)
    return f"; did you mean {near!r}?" if near else ""
