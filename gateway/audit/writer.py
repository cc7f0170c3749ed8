"""Group commit of decision writes: many concurrent requests, one transaction, one fsync.

Every request writes its decision twice (open, then close), and each write must be durable
before the request goes on. One transaction per write costs a commit (an fsync) and a lock
on the audit head each, which caps a gateway at a few hundred requests per second however
many threads serve it. Here, a request thread hands its write to the :class:`DecisionWriter`
and waits; the first waiting thread becomes the *leader*: it takes every write queued so far
(up to ``max_batch``), writes them in one transaction (one multi-row INSERT per table, one
head lock and update, see :meth:`AuditLog.append_many`), commits, and only then wakes the
threads whose writes were in it. Writes that arrive meanwhile queue up for the next batch,
led by the first of them. A lone request is written at once, as before: nothing waits for a
batch to fill.

Nothing is weakened: each caller returns only after the transaction holding its write has
committed, and sees that transaction's error otherwise (fail closed). If a batch fails, its
writes are retried one transaction each, so one bad write cannot fail the others. Across
processes and replicas the head row lock (``BEGIN IMMEDIATE`` on SQLite) still orders the
batches, so the sequence stays gapless.

Faults: a batch that fails with a transient database error (connection lost or killed,
SQLite locked past its busy timeout, see :func:`gateway.db.faults.is_transient`) is tried
again after a pause that doubles each time, until each write's own retry window (counted
from when its caller handed it over) has passed; a write whose window runs out fails with
:class:`AuditUnavailable`. A retried write whose earlier commit did happen (the connection
died after the server committed) is recognised and not written twice.

The writer also knows which decisions this process has opened and not yet closed
(:meth:`DecisionWriter.in_flight`), and which closes it gave up on and why
(:meth:`DecisionWriter.stuck`): :mod:`gateway.audit.reconcile` closes those as ``failed``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, bindparam, select, update
from sqlalchemy.exc import NoResultFound

from gateway.audit.decisions import (
    DecisionAlreadyClosed,
    Opening,
    closing_values,
    decided_event,
    decision_row,
    new_decision_id,
    received_event,
)
from gateway.audit.events import AuditLog, EventSpec, insert_many
from gateway.audit.stuck import AuditUnavailable, Stuck, stuck_after
from gateway.db.faults import describe, is_transient
from gateway.db.models import Decision, PersonalData


class WriteObserver(Protocol):
    """Told of each committed close and transaction (metrics: :mod:`gateway.observability`)."""

    def decision_closed(
        self, outcome: str, record: Mapping[str, Any], write_s: float | None = None
    ) -> None: ...

    def batch_written(self, seconds: float) -> None: ...


class _Job:
    __slots__ = ("deadline", "done", "error", "retried", "wake")

    def __init__(self) -> None:
        self.wake = threading.Event()
        self.done = False
        self.error: BaseException | None = None
        self.deadline = math.inf  # monotonic time after which a transient failure is final
        self.retried = False  # an attempt failed transiently: its commit may have happened


class _Open(_Job):
    __slots__ = ("decision_id", "opening")

    def __init__(self, opening: Opening) -> None:
        super().__init__()
        self.opening = opening
        self.decision_id = new_decision_id()


class _Close(_Job):
    __slots__ = ("decision_id", "error_code", "http_status", "outcome", "record", "values")

    def __init__(
        self,
        decision_id: str,
        outcome: str,
        http_status: int,
        error_code: str | None,
        record: dict[str, Any],
    ) -> None:
        super().__init__()
        self.decision_id = decision_id
        self.outcome = outcome
        self.http_status = http_status
        self.error_code = error_code
        self.record = record
        # checked here, in the caller's thread: an unknown outcome never reaches a batch
        self.values = closing_values(outcome, http_status, error_code, record, datetime.now(UTC))


_CLOSE = (
    update(Decision)
    .where(Decision.id == bindparam("b_id"), Decision.status == "open")
    .values(
        status="closed",
        outcome=bindparam("b_outcome"),
        http_status=bindparam("b_http_status"),
        error_code=bindparam("b_error_code"),
        closed_at=bindparam("b_closed_at", type_=Decision.__table__.c.closed_at.type),
        record=bindparam("b_record", type_=Decision.__table__.c.record.type),
        categories=bindparam("b_categories"),
    )
)


# PostgreSQL: every close of a batch in one statement, the values passed as arrays (%b: in
# binary, so psycopg need not escape each JSON text into an array literal)
_PG_CLOSE = """
UPDATE decisions AS d SET status = 'closed', outcome = v.outcome,
  http_status = v.http_status, error_code = v.error_code, closed_at = v.closed_at,
  record = v.record::json, categories = v.categories
FROM unnest(%(id)b::text[], %(outcome)b::text[], %(http_status)b::int[],
            %(error_code)b::text[], %(closed_at)b::timestamptz[], %(record)b::text[],
            %(categories)b::text[])
  AS v(id, outcome, http_status, error_code, closed_at, record, categories)
WHERE d.id = v.id AND d.status = 'open'
"""


def _close_rows(conn: Connection, closes: list[dict[str, Any]]) -> int:
    if conn.dialect.name != "postgresql" or len(closes) == 1:
        return conn.execute(_CLOSE, closes).rowcount
    arrays: dict[str, list[Any]] = {
        name: [row[f"b_{name}"] for row in closes]
        for name in ("id", "outcome", "http_status", "error_code", "closed_at", "categories")
    }
    arrays["record"] = [json.dumps(row["b_record"]) for row in closes]
    raw: Any = conn.connection.dbapi_connection  # the psycopg connection, same transaction
    with raw.cursor() as cursor:
        cursor.execute(_PG_CLOSE, arrays)
        return int(cursor.rowcount)


class DecisionWriter:
    """Opens and closes decisions durably, batching concurrent callers into one commit."""

    def __init__(
        self,
        engine: Engine,
        log: AuditLog,
        *,
        max_batch: int = 256,
        retry_s: float = 5.0,
        backoff_s: float = 0.1,
        max_backoff_s: float = 1.0,
        observer: WriteObserver | None = None,
    ) -> None:
        self.engine = engine
        self.observer = observer
        self.log = log
        self.max_batch = max_batch
        self.retry_s = retry_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._mutex = threading.Lock()
        self._pending: list[_Job] = []
        self._leading = False
        self._in_flight: set[str] = set()
        self._stuck: dict[str, Stuck] = {}
        self.batches = 0  # transactions committed (for the benchmark and tests)
        self.writes = 0  # writes committed
        self.retries = 0  # transient failures retried

    # -- what the reconciler needs ------------------------------------------------------
    def in_flight(self) -> set[str]:
        """Decisions opened (or being opened) here whose request has not finished closing."""
        with self._mutex:
            return set(self._in_flight)

    def stuck(self) -> dict[str, Stuck]:
        """Decisions whose write this process gave up on, with why."""
        with self._mutex:
            return dict(self._stuck)

    def forget(self, decision_ids: set[str]) -> None:
        """The reconciler closed these (or found them not open): stop tracking them."""
        with self._mutex:
            for decision_id in decision_ids:
                self._stuck.pop(decision_id, None)

    def _give_up(self, decision_id: str, stuck: Stuck) -> None:
        with self._mutex:
            self._in_flight.discard(decision_id)
            self._stuck[decision_id] = stuck

    # -- the API --------------------------------------------------------------------------
    def open(self, opening: Opening) -> str:
        """Write the decision and its ``received`` event; return its id once committed.

        Raises :class:`AuditUnavailable` when the database stays down for the retry window;
        the decision may then exist (its commit may have happened), so it is handed to the
        reconciler, which closes it as ``failed`` if it does.
        """
        job = _Open(opening)
        with self._mutex:
            self._in_flight.add(job.decision_id)
        try:
            self._submit(job)
        except BaseException as exc:
            self._give_up(job.decision_id, stuck_after(exc))
            raise
        return job.decision_id

    def close(
        self,
        decision_id: str,
        *,
        outcome: str,
        http_status: int,
        error_code: str | None,
        record: dict[str, Any],
    ) -> None:
        """Close an open decision with its ``decided`` event; return once committed.

        Raises :class:`AuditUnavailable` when the database stays down for the retry window;
        the decision stays open and is handed, with the close that failed, to the reconciler.
        """
        started = time.perf_counter()
        job = _Close(decision_id, outcome, http_status, error_code, record)
        try:
            self._submit(job)
        except DecisionAlreadyClosed:
            with self._mutex:  # someone else closed it: it is not ours to track any more
                self._in_flight.discard(decision_id)
            raise
        except BaseException as exc:
            intended = {"outcome": outcome, "http_status": http_status, "error_code": error_code}
            self._give_up(decision_id, stuck_after(exc, intended, record))
            raise
        with self._mutex:
            self._in_flight.discard(decision_id)
        self.observe_closed(outcome, record, time.perf_counter() - started)

    def observe_closed(
        self, outcome: str, record: Mapping[str, Any], write_s: float | None = None
    ) -> None:
        """Tell the observer a decision closed (here, or by the reconciler: ``write_s`` None)."""
        if self.observer is not None:
            self.observer.decision_closed(outcome, record, write_s)

    # -- group commit -------------------------------------------------------------------
    def _submit(self, job: _Job) -> None:
        job.deadline = time.monotonic() + self.retry_s
        with self._mutex:
            self._pending.append(job)
            lead = not self._leading
            self._leading = True
        if not lead:
            job.wake.wait()  # woken when written, or to lead the next batch
        if not job.done:
            self._lead()
        if job.error is not None:
            raise job.error

    def _lead(self) -> None:
        with self._mutex:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
        try:
            self._write(batch)
        finally:
            for job in batch:  # fail closed: nobody is left waiting, nothing unwritten passes
                if not job.done:
                    job.done = True
                    job.error = job.error or RuntimeError("the audit write was not completed")
                job.wake.set()
            with self._mutex:
                if self._pending:
                    self._pending[0].wake.set()  # not done: it leads the next batch
                else:
                    self._leading = False

    def _write(self, batch: list[_Job]) -> None:
        delay = self.backoff_s
        while batch:
            try:
                _finish(batch, self._write_batch(batch))
                return
            except Exception as exc:
                if not is_transient(exc):
                    if len(batch) == 1:
                        _finish(batch, {batch[0]: exc})
                        return
                    for job in batch:  # find the bad write; the others still commit
                        self._write([job])
                    return
                self.retries += 1
                now = time.monotonic()
                expired = [job for job in batch if job.deadline <= now + delay]
                reason = describe(exc)
                for job in expired:  # their callers answer 503 now, not when the batch ends
                    job.error, job.done = AuditUnavailable(reason), True
                    job.wake.set()
                batch = [job for job in batch if not job.done]
                for job in batch:
                    job.retried = True
                if batch:
                    time.sleep(delay)
                    delay = min(delay * 2, self.max_backoff_s)

    def _write_batch(self, batch: list[_Job]) -> dict[_Job, BaseException]:
        """One transaction for the batch; return the writes refused (they wrote nothing)."""
        errors: dict[_Job, BaseException] = {}
        decisions: list[dict[str, Any]] = []
        closes: list[dict[str, Any]] = []
        personal: list[dict[str, str]] = []
        events: list[EventSpec] = []
        started = time.perf_counter()
        with self.engine.begin() as conn:
            batch = self._skip_committed(conn, batch)
            close_ids = sorted({j.decision_id for j in batch if isinstance(j, _Close)})
            tenants: dict[str, str] = {}
            found: set[str] = set()
            if close_ids:
                rows = conn.execute(
                    select(Decision.id, Decision.tenant_id, Decision.status)
                    .where(Decision.id.in_(close_ids))
                    .order_by(Decision.id)
                    .with_for_update()
                )
                for decision_id, tenant_id, status in rows:
                    found.add(decision_id)
                    if status == "open":
                        tenants[decision_id] = tenant_id
            now = datetime.now(UTC)
            for job in batch:
                if isinstance(job, _Open):
                    decisions.append(decision_row(job.decision_id, job.opening, now))
                    spec, rows_ = received_event(job.decision_id, job.opening, now)
                elif isinstance(job, _Close):
                    tenant_id = tenants.pop(job.decision_id, "")  # a second close is refused
                    if not tenant_id and job.retried and job.decision_id in found:
                        continue  # our earlier attempt did commit (only we close it)
                    if not tenant_id:
                        errors[job] = (
                            DecisionAlreadyClosed(job.decision_id)
                            if job.decision_id in found
                            else NoResultFound(f"no decision {job.decision_id}")
                        )
                        continue
                    closes.append(
                        {f"b_{k}": v for k, v in job.values.items() if k != "status"}
                        | {"b_id": job.decision_id}
                    )
                    spec, rows_ = decided_event(
                        job.decision_id,
                        tenant_id,
                        job.outcome,
                        job.http_status,
                        job.error_code,
                        job.record,
                        job.values["closed_at"],
                    )
                else:  # pragma: no cover
                    raise TypeError(job)
                personal.extend(rows_)
                events.append(spec)
            insert_many(conn, Decision, decisions)
            if closes:
                updated = _close_rows(conn, closes)
                if updated not in (-1, len(closes)):  # the rows are locked: cannot happen
                    raise RuntimeError(f"closed {updated} of {len(closes)} decisions")
            insert_many(conn, PersonalData, personal)
            self.log.append_many(conn, events)
        if self.observer is not None:  # committed
            self.observer.batch_written(time.perf_counter() - started)
        self.batches += 1
        self.writes += len(events)
        return errors

    def _skip_committed(self, conn: Connection, batch: list[_Job]) -> list[_Job]:
        """Drop retried opens whose earlier attempt committed after all (they are written)."""
        retried = [j.decision_id for j in batch if isinstance(j, _Open) and j.retried]
        if not retried:
            return batch
        done = set(conn.scalars(select(Decision.id).where(Decision.id.in_(retried))))
        return [j for j in batch if not (isinstance(j, _Open) and j.decision_id in done)]


def _finish(batch: list[_Job], errors: dict[_Job, BaseException]) -> None:
    for job in batch:
        job.error = errors.get(job)
        job.done = True
