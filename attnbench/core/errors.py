"""The one error type the CLI turns into a one-line message (no traceback) and exit code 2."""
from __future__ import annotations

import click

__all__ = ["UserError", "os_error_text"]


class UserError(click.ClickException):
    """Bad input from the user: a suite file, a key, an option. The message says what was expected."""

    exit_code = 2


def os_error_text(e: OSError, doing: str = "") -> str:
    """One line for a file-system error: the path, what was being done, and the system's reason."""
    where = e.filename if e.filename is not None else "(file system)"
    extra = f" -> {e.filename2}" if getattr(e, "filename2", None) else ""
    return f"{where}{extra}: {doing + ': ' if doing else ''}{e.strerror or e}"
