"""The one error type the CLI turns into a one-line message (no traceback) and exit code 2."""
from __future__ import annotations

import click

__all__ = ["UserError"]


class UserError(click.ClickException):
    """Bad input from the user: a suite file, a key, an option. The message says what was expected."""

    exit_code = 2
