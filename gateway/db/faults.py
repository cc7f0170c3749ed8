"""Which database errors are worth retrying, and how to name one without leaking data.

A *transient* error is one the same statement may not hit again: the connection was lost or
killed, the server refused new connections, a lock was not granted in time (SQLite's busy
timeout), a deadlock was broken, the pool had no free connection. Retrying anything else
(a constraint refused a row, a bug in a statement) cannot help.
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | PoolTimeout)


def describe(exc: BaseException) -> str:
    """A short reason for the audit trail: the driver's error class and first line.

    SQLAlchemy's own text carries the statement and its parameters (prompts, user ids), so
    only the driver's message is kept, and only its first line (at most 200 characters).
    """
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    if orig is None:
        return type(exc).__name__
    first = (str(orig).strip().splitlines() or [""])[0][:200]
    name = f"{type(orig).__module__.split('.')[0]}.{type(orig).__name__}"
    return f"{name}: {first}" if first else name
