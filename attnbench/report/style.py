"""One fixed colour and marker per mechanism, in every figure of every report.

The five shipped mechanisms own fixed styles, so ``mhsa`` is the same blue in a smoke report and in a resolution
sweep whatever the label order. Any other series (a user attention, an ablation label such as ``dbra-topk8``, a
``label (run)`` series of a multi-run report) gets a slot from a fixed list of (colour, marker) pairs: its
preferred slot is a stable hash of its name (SHA-1, not Python's salted ``hash``), and when two series of one
report want the same slot, the one first in sorted order keeps it and the other takes the next free slot. So a
name gets the same style in every report unless it collides with another name of that report, and the result never
depends on the order the series appear in. Pure Python: no matplotlib import, so it is cheap to test.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterable

__all__ = ["FIXED", "MISSING_MARKERS", "SeriesStyle", "series_styles"]


@dataclasses.dataclass(frozen=True)
class SeriesStyle:
    """A series' colour (hex) and matplotlib marker."""

    color: str
    marker: str


#: the shipped mechanisms (registry names); matplotlib's tab10 colours, one marker shape each
FIXED = {
    "mhsa": SeriesStyle("#1f77b4", "o"),   # blue circle: the usual baseline
    "bra": SeriesStyle("#ff7f0e", "s"),    # orange square
    "dbra": SeriesStyle("#d62728", "D"),   # red diamond
    "dat": SeriesStyle("#2ca02c", "^"),    # green triangle
    "agent": SeriesStyle("#9467bd", "v"),  # purple down-triangle
}
#: colours and markers left for other series. Each colour is at least ΔE*ab = 40 (CIE 1976 Lab) from every fixed
#: colour, so no user series reads as a shipped one (a dark indigo beside mhsa's blue did); each marker has a shape
#: no fixed marker has (no circle-like hexagon or pentagon, no triangle, diamond or square). 8 and 9 are coprime,
#: so slot i gives 72 distinct pairs.
_EXTRA_COLORS = ("#000000", "#17becf", "#e6c200", "#ff1493", "#a0a0a0", "#4d4d4d", "#808000", "#008080")
_EXTRA_MARKERS = ("P", "X", "*", "+", "1", "$\\clubsuit$", "$\\spadesuit$", "$\\heartsuit$", "|")
_SLOTS = tuple(SeriesStyle(_EXTRA_COLORS[i % len(_EXTRA_COLORS)], _EXTRA_MARKERS[i % len(_EXTRA_MARKERS)])
               for i in range(len(_EXTRA_COLORS) * len(_EXTRA_MARKERS)))

#: how a cell without a value is drawn: status -> (marker, what the legend says)
MISSING_MARKERS = {
    "oom": ("x", "out of memory"),
    "failed": ("$!$", "failed"),
    "skipped": ("$s$", "skipped"),
    "excluded": ("$e$", "excluded by the suite"),
}


def _preferred_slot(name: str) -> int:
    return int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[:8], "big") % len(_SLOTS)


def series_styles(names: Iterable[str]) -> dict[str, SeriesStyle]:
    """name -> style for every distinct name; the shipped mechanisms keep :data:`FIXED`."""
    names = sorted(set(map(str, names)))
    styles = {n: FIXED[n] for n in names if n in FIXED}
    taken: set[int] = set()
    for name in (n for n in names if n not in FIXED):
        slot = _preferred_slot(name)
        while slot in taken and len(taken) < len(_SLOTS):
            slot = (slot + 1) % len(_SLOTS)
        taken.add(slot)
        styles[name] = _SLOTS[slot]
    return styles
