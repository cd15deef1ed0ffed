"""Processes that die with the attnbench process that started them, however it ends.

A cell measured in a child process (``--isolate``) and a ``local`` batch job work for one ``attnbench run``; when
that run ends (Ctrl-C, SIGTERM, or SIGKILL, which no handler sees) they must end too, or they go on competing for
the machine and writing where no one reads. Two means, both without any cooperation from the parent at its end:

* :func:`die_with_parent` (an ``--isolate`` child, at its start): Linux's ``PR_SET_PDEATHSIG`` through ``ctypes``
  asks the kernel to SIGKILL this process when its parent dies; a parent that died before that call is caught
  by comparing ``os.getppid()`` with the pid the parent announced. Elsewhere (no ``prctl``) it falls back to
  :func:`watch_parent`.
* :func:`watch_parent` (a local job's task, whose parent is submitit's controller, not attnbench): a daemon thread
  that polls the attnbench process and, once it is gone (or a zombie), ends this process with SIGKILL;
  its own isolated children follow by their death signal.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

__all__ = ["PARENT_ENV", "process_alive", "die_with_parent", "watch_parent"]

#: the pid of the attnbench process a child works for, announced in its environment
PARENT_ENV = "ATTNBENCH_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs: it exists and is not a zombie (a killed process its parent has not reaped yet)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except FileNotFoundError:
        return False
    except (OSError, ValueError):  # no /proc (macOS): ask the kernel
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError):
            return True
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def die_with_parent(parent_pid: Optional[int] = None) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux); see the module docstring."""
    parent_pid = parent_pid if parent_pid is not None else _announced()
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if libc_name:
        try:
            libc = ctypes.CDLL(libc_name, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if parent_pid is not None and os.getppid() != parent_pid:  # it died before the call
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
    if parent_pid is not None:
        watch_parent(parent_pid)


def watch_parent(pid: int, interval_s: float = 0.5) -> threading.Thread:
    """A daemon thread that SIGKILLs this process once ``pid`` no longer runs."""

    def watch() -> None:
        while process_alive(pid):
            threading.Event().wait(interval_s)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="attnbench-parent-watch", daemon=True)
    thread.start()
    return thread


def _announced() -> Optional[int]:
    value = os.environ.get(PARENT_ENV, "")
    return int(value) if value.isdigit() else None
