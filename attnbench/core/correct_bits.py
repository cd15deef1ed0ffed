"""Per-image correctness of an accuracy evaluation, stored compactly in a results row.

The evaluation records, for every validation image in validation order, whether the top-1 prediction was right.
The row stores it as ``acc_top1_correct``: the base64 text (RFC 4648, with padding) of the bits packed eight to a
byte by :func:`numpy.packbits` (first image in the most significant bit of the first byte, the last byte padded
with zeros); ``acc_val_n`` is the number of images. 1,000 images take 168 characters, ImageNet's 50,000 about
8.3 kB. Two attentions evaluated on the same images can then be compared image by image
(:func:`paired_counts`, then :func:`attnbench.core.stats.mcnemar` and
:func:`attnbench.core.stats.paired_proportion_diff_interval`). Pure numpy: the report reads it without torch.
"""
from __future__ import annotations

import base64
from typing import Sequence

import numpy as np

__all__ = ["encode_bits", "decode_bits", "paired_counts"]


def encode_bits(bits: Sequence[bool]) -> str:
    """The base64 text of ``bits`` packed eight to a byte (most significant bit first)."""
    arr = np.asarray(bits, dtype=bool).ravel()
    return base64.b64encode(np.packbits(arr).tobytes()).decode("ascii")


def decode_bits(text: str, n: int) -> np.ndarray:
    """The ``n`` booleans :func:`encode_bits` stored in ``text``.

    Raises:
        ValueError: ``text`` is not base64 or does not hold ``n`` bits (one message naming both lengths).
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"acc_top1_correct: not base64 text ({exc})") from None
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"acc_top1_correct: holds {len(raw)} bytes, expected {(n + 7) // 8} for acc_val_n={n}")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n).astype(bool)


def paired_counts(first: np.ndarray, second: np.ndarray) -> tuple[int, int, int, int]:
    """(both right, only ``first`` right, only ``second`` right, both wrong) over the same images."""
    if first.shape != second.shape:
        raise ValueError(f"paired_counts: the two evaluations cover {first.size} and {second.size} images; a "
                         "paired comparison needs the same validation images")
    return (int(np.sum(first & second)), int(np.sum(first & ~second)), int(np.sum(~first & second)),
            int(np.sum(~first & ~second)))
