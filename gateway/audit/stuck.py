"""What a decision write that failed leaves behind: its error, and its entry for the reconciler."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.db.faults import describe


class AuditUnavailable(Exception):
    """The database did not take an audit write within its retry window (nothing passes)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the audit trail could not be written: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Stuck:
    """A decision this process gave up writing; the reconciler closes it as ``failed``."""

    reason: str  # what stopped the write (no personal data: see gateway.db.faults.describe)
    answered: int  # the status its client got: 503 audit_unavailable, or 500
    intended: dict[str, Any] | None = None  # the close that failed: outcome, http_status, ...
    record: dict[str, Any] | None = None  # ... and its record


def stuck_after(
    exc: BaseException,
    intended: dict[str, Any] | None = None,
    record: dict[str, Any] | None = None,
) -> Stuck:
    if isinstance(exc, AuditUnavailable):
        return Stuck(exc.reason, 503, intended, record)
    return Stuck(describe(exc), 500, intended, record)
