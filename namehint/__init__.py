""""Did you mean": the one rule that picks the nearest of some names to a mistyped one.

Standard library only, and a package of its own, so that both ``attentions`` (which never imports ``attnbench``)
and ``attnbench.core.hints`` (which must not import ``attentions``, i.e. torch, before the CLI has checked its
arguments) use this one rule instead of two copies of it. The rule: the only option equal to the word but for
case (``DBRA`` -> ``dbra``), else the only option the word (three characters or more) is a prefix of (``rep`` ->
``report``), else :mod:`difflib`'s closest option above a ratio of 0.6 (the share of matching characters).
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
