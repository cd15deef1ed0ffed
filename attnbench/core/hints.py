""""Did you mean" hints for the CLI's error messages: nearest names, suite files and sibling paths.

Imports nothing beyond the standard library and the file names of :mod:`attnbench.core.results`, so an error message
with a hint costs no import time: the CLI checks its arguments with these before it imports torch
(``docs/cli.md``). Which name is nearest is :func:`namehint.closest`'s one rule (shared with ``attentions``);
this module adds the paths, suite files and wording around it.
"""
from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from namehint import closest, did_you_mean  # the one "did you mean" rule (stdlib only: no torch here)

from .results import MANIFEST_FILE, RESULTS_FILE

__all__ = ["closest", "did_you_mean", "suggestion", "suggest_suite", "suggest_sibling", "is_run_dir", "run_dir_hint",
           "check_run_dir", "check_run_dirs", "pattern_hint", "import_path_hint", "SUITE_SUFFIXES"]

SUITE_SUFFIXES = (".yaml", ".yml")
#: entries of a directory looked at for a "did you mean" path
MAX_SIBLINGS = 5000


def suggestion(near: Optional[str]) -> str:
    """``"; did you mean NEAR?"``, or ``""`` without one: the one wording of every hint."""
    return f"; did you mean {near}?" if near else ""


def shipped_suites_dir() -> Path:
    """``suites/`` of the source tree this package was imported from (absent in a wheel install)."""
    return Path(__file__).resolve().parent.parent / "suites"


def _suite_files(where: Path) -> list[Path]:
    try:
        return sorted(p for p in where.iterdir() if p.suffix in SUITE_SUFFIXES and p.is_file())
    except OSError:
        return []


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (what a user would type)."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except (OSError, ValueError):
        return str(path)


def suggest_suite(given: str) -> Optional[str]:
    """The suite file a mistyped ``attnbench run`` argument most likely meant, as a path to type, or None.

    Looks in the directory the argument names (``suites/resolution_swep.yaml`` -> ``suites/``), in ``./suites``
    and in the source tree's ``suites/``; a bare name (``resolution_sweep``) matches a file's name without its
    suffix. The same file found twice is offered once.
    """
    path = Path(given)
    stem = path.stem if path.suffix in SUITE_SUFFIXES else path.name
    places = [path.parent, Path("suites"), shipped_suites_dir()]
    candidates: dict[Path, Path] = {}
    for place in places:
        for f in _suite_files(place):
            candidates.setdefault(f.resolve(), f)
    if not candidates:
        return None
    by_stem: dict[str, Path] = {}
    for f in candidates.values():
        by_stem.setdefault(f.stem, f)
    name = stem if stem in by_stem else closest(stem, by_stem)
    return _shown(by_stem[name]) if name else None


def suggest_sibling(given: str, keep: Optional[Callable[[Path], bool]] = None) -> Optional[str]:
    """The entry of ``given``'s parent directory (only those ``keep`` accepts) whose name is nearest to ``given``'s
    (``runs/smoke-2026`` -> ``runs/smoke-20261128-050000``), or None."""
    path = Path(given)
    try:  # a bounded look: a hint is not worth a long scan of a huge directory
        siblings = [p for p in itertools.islice(path.parent.iterdir(), MAX_SIBLINGS) if keep is None or keep(p)]
    except OSError:
        return None
    name = closest(path.name, [p.name for p in siblings if not p.name.startswith(".")])
    return str(path.parent / name) if name else None


def pattern_hint(pattern: str, names: Sequence[str]) -> str:
    """For a shell pattern that matched none of ``names``: ``"; did you mean 'db*'?"`` (a plain word that starts
    some names) or the nearest name, else ``""``."""
    if not any(c in pattern for c in "*?["):
        starting = [n for n in names if n.startswith(pattern)]
        if len(starting) > 1:
            return suggestion(f"{pattern + '*'!r} ({', '.join(starting)})")
    return did_you_mean(pattern.strip("*?"), names)


def is_run_dir(path: Path) -> bool:
    """A directory `attnbench run` wrote (it holds results.jsonl or manifest.json)."""
    return (path / RESULTS_FILE).exists() or (path / MANIFEST_FILE).exists()


def run_dir_hint(given: str) -> str:
    """``"; did you mean runs/x?"`` for a run directory that is not there: the nearest directory beside it."""
    return suggestion(suggest_sibling(given, is_run_dir))


def check_run_dir(path: str, option: str = "", expected: str = "a run directory made by attnbench run") -> None:
    """Raise :class:`attnbench.core.errors.UserError` unless ``path`` (given as ``option``, e.g. ``--resume``) is a
    directory: ``"--resume runs/x: not a directory; expected ...; did you mean runs/y?"``."""
    from .errors import UserError

    if not os.path.isdir(path):
        raise UserError(f"{option + ' ' if option else ''}{path}: not a directory; expected {expected}"
                        + run_dir_hint(path))


def check_run_dirs(run_dirs: Iterable[str]) -> None:
    """Raise :class:`attnbench.core.errors.UserError` naming every given run directory that is not a directory, each
    with the nearest directory beside it: before the report code (pandas, matplotlib) is imported."""
    from .errors import UserError

    bad = [d for d in run_dirs if not os.path.isdir(d)]
    if not bad:
        return
    parts = []
    for d in bad:
        near = suggest_sibling(d, is_run_dir)
        parts.append(f"{d}: not a directory" + (f" (did you mean {near}?)" if near else ""))
    raise UserError("; ".join(parts) + "; expected a run directory written by `attnbench run`")


def import_path_hint(dotted: str, error: BaseException) -> str:
    """Where the module of a dotted-path attention (``package.module:Class``) has to be, when importing it failed
    because that module (or its package) was not found; ``""`` for any other failure.

    The ``attnbench`` command does not search the working directory (a console script's ``sys.path`` starts with its
    own folder), so a package beside the suite is found only with ``PYTHONPATH=.``, when installed, or with
    ``python -m attnbench.cli``.
    """
    missing = error if isinstance(error, ModuleNotFoundError) else error.__cause__
    module = dotted.partition(":")[0]
    if not isinstance(missing, ModuleNotFoundError) or not missing.name:
        return ""
    if not (module == missing.name or module.startswith(missing.name + ".")):
        return ""  # the user's module was found, and something it imports was not: its own message says what
    top = module.split(".")[0]
    here = Path.cwd()
    beside = (here / top).is_dir() or (here / f"{top}.py").is_file()
    searched = any(Path(p or ".").resolve() == here.resolve() for p in sys.path)
    if beside and not searched:
        return (f"; {top} is in the working directory, which the attnbench command does not search: run "
                f"`PYTHONPATH=. attnbench ...` (or install the package)")
    return f"; {top} must be importable: put its folder on PYTHONPATH or install it (docs/cli.md)"
