"""The tile-size contract every kernel checks at compile time, as one ``@triton.jit`` helper.

Kernels call it first, with their constexpr tile sizes: a violation is a compile error (or, under the interpreter,
an assertion at the first launch) instead of wrong results.
"""
from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["check_tile_sizes"]


@triton.jit
def check_tile_sizes(HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """BLOCK_D covers the head dimension, and every tile side is at least 16 (tl.dot's minimum)."""
    tl.static_assert(BLOCK_D >= HEAD_DIM)
    tl.static_assert(BLOCK_M >= 16)
    tl.static_assert(BLOCK_N >= 16)
    tl.static_assert(BLOCK_D >= 16)
