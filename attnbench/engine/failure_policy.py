"""Failures that repeat, and failures to measure again.

An attention that fails the same way in two cells (the same exception class at the same stage, or a time-out)
will almost surely fail the same way in the rest: a wrong-shape output, a missing kernel, a hang. Measuring its
remaining cells would cost one time-out (up to 15 minutes) or one child start-up each and tell nothing new, so
:class:`RepeatedFailures` skips them, each as a ``skipped`` row with ``error_stage`` :data:`REPEAT_STAGE` and a
reason naming the failure. ``settings.skip_repeated_failures: false`` measures every cell regardless.

``attnbench run --resume RUN_DIR --retry-failed`` measures again every cell whose latest row is ``failed``,
``oom`` or such a skip (:func:`retryable_ids`); the new row is appended, and readers take a cell's latest row.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from ..core.results import FAILED_STATUSES

__all__ = ["REPEAT_STAGE", "SETTING", "REPEATS", "RepeatedFailures", "failure_kind", "retryable_ids",
           "is_repeat_skip"]

#: ``error_stage`` of a cell skipped because its attention already failed the same way twice
REPEAT_STAGE = "repeated_failure"
#: the suite setting that turns the skipping off
SETTING = "skip_repeated_failures"
#: how many same failures of one attention stop its remaining cells
REPEATS = 2


def failure_kind(status: str, error: Optional[str], stage: Optional[str]) -> Optional[str]:
    """What makes two failures "the same": ``"timeout"`` for any time-out, else ``"<ExceptionType> at <stage>"``;
    None for an ``ok`` or ``skipped`` outcome. An out-of-memory error is not one (a larger cell may not fit where
    a smaller did, so it says nothing of the other cells)."""
    if status in ("ok", "skipped", "oom"):
        return None
    error = error or ""
    if stage == "timeout" or error.startswith("CellTimeout"):
        return "timeout"
    return f"{error.partition(':')[0] or 'error'} at {stage or 'unknown stage'}"


class RepeatedFailures:
    """Counts each attention's failures by kind; :meth:`reason` says why a cell of it is not worth measuring."""

    def __init__(self, enabled: bool = True, repeats: int = REPEATS):
        self.enabled, self.repeats = enabled, repeats
        self._counts: dict[tuple[str, str], int] = {}
        self._stopped: dict[str, str] = {}

    @classmethod
    def for_settings(cls, settings: dict[str, Any]) -> "RepeatedFailures":
        return cls(enabled=settings.get(SETTING, True) is not False)

    def record(self, label: str, status: str, error: Optional[str], stage: Optional[str]) -> None:
        kind = failure_kind(status, error, stage)
        if kind is None or not self.enabled:
            return
        key = (label, kind)
        self._counts[key] = self._counts.get(key, 0) + 1
        if self._counts[key] >= self.repeats and label not in self._stopped:
            what = "timed out" if kind == "timeout" else f"failed with {kind}"
            self._stopped[label] = (f"not measured: {label} {what} in {self._counts[key]} cells already "
                                    f"(last: {error}); settings.{SETTING}: false measures every cell")

    def reason(self, label: str) -> Optional[str]:
        return self._stopped.get(label)


def is_repeat_skip(row: dict[str, Any]) -> bool:
    return row.get("status") == "skipped" and row.get("error_stage") == REPEAT_STAGE


def retryable_ids(rows: Iterable[dict[str, Any]]) -> set[str]:
    """cell_ids whose latest row is ``failed``, ``oom`` or a repeated-failure skip: what ``--retry-failed`` runs."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        if "cell_id" in row:
            latest[row["cell_id"]] = row
    return {cid for cid, row in latest.items() if row.get("status") in FAILED_STATUSES or is_repeat_skip(row)}
