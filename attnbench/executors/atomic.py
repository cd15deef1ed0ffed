"""Replacing a file atomically: write a temporary file beside it, fsync it, ``os.replace`` it over the old one.

A reader (another process, another node on a shared file system) then sees the old file or the new one, never a
mix; a crash mid-write leaves the old file and no stray temporary one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..results import created_mode

__all__ = ["replace_atomically"]


def replace_atomically(path: str | Path, data: bytes) -> None:
    """Make ``path`` hold ``data``, atomically."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, created_mode())  # as results.jsonl is created, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
