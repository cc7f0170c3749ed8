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
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from typing import Any

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
from gateway.db.models import Decision, PersonalData


class _Job:
    __slots__ = ("done", "error", "wake")

    def __init__(self) -> None:
        self.wake = threading.Event()
        self.done = False
        self.error: BaseException | None = None


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

    def __init__(self, engine: Engine, log: AuditLog, *, max_batch: int = 256) -> None:
        self.engine = engine
        self.log = log
        self.max_batch = max_batch
        self._mutex = threading.Lock()
        self._pending: list[_Job] = []
        self._leading = False
        self.batches = 0  # transactions committed (for the benchmark and tests)
        self.writes = 0  # writes committed

    def open(self, opening: Opening) -> str:
        """Write the decision and its ``received`` event; return its id once committed."""
        job = _Open(opening)
        self._submit(job)
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
        """Close an open decision with its ``decided`` event; return once committed."""
        self._submit(_Close(decision_id, outcome, http_status, error_code, record))

    # -- group commit -------------------------------------------------------------------
    def _submit(self, job: _Job) -> None:
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
        try:
            _finish(batch, self._write_batch(batch))
        except Exception as exc:
            if len(batch) == 1:
                _finish(batch, {batch[0]: exc})
                return
            for job in batch:  # find the bad write; the others still commit
                try:
                    _finish([job], self._write_batch([job]))
                except Exception as one:
                    _finish([job], {job: one})

    def _write_batch(self, batch: list[_Job]) -> dict[_Job, BaseException]:
        """One transaction for the batch; return the writes refused (they wrote nothing)."""
        errors: dict[_Job, BaseException] = {}
        decisions: list[dict[str, Any]] = []
        closes: list[dict[str, Any]] = []
        personal: list[dict[str, str]] = []
        events: list[EventSpec] = []
        with self.engine.begin() as conn:
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
        self.batches += 1
        self.writes += len(events)
        return errors


def _finish(batch: list[_Job], errors: dict[_Job, BaseException]) -> None:
    for job in batch:
        job.error = errors.get(job)
        job.done = True
