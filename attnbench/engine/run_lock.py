"""One writer per run directory: an advisory ``fcntl.flock`` on ``RUN_DIR/.lock`` held for the whole run.

A second ``attnbench run --out DIR`` or ``--resume DIR`` while the first still runs is refused with a message naming
the holder's PID (written into the lock file). The kernel drops a ``flock`` when its holder dies, however it dies
(SIGKILL included), so a killed run never leaves a stale lock: the lock file may remain, but unlocked.

The file is removed on release. Removing a lock file races with a process that opened it but has not locked it yet,
so :meth:`RunLock.acquire` checks after locking that the path still names the inode it locked, and retries if not.
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Optional

from ..core.errors import UserError
from ..core.results import LOCK_FILE

__all__ = ["RunLock", "RunLocked"]


class RunLocked(UserError):
    """Another process holds the run directory."""


class RunLock:
    """``with RunLock(run_dir):`` -- this process is the only writer of ``run_dir`` inside the block."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: Optional[int] = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def acquire(self) -> "RunLock":
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunLocked(f"{self.path.parent}: another attnbench process (PID {self.holder()}) is writing "
                                    "to this run directory; wait for it to finish or choose another --out") from None
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed the file between our open and our lock: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked, so no one else holds this inode
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
