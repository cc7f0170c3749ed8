"""The audit event log: gapless, hash-chained, and append-only in the database itself."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from gateway.audit.events import chain_hash
from gateway.db.engine import unit_of_work
from gateway.db.models import AuditEvent
from gateway.runtime import Runtime


def test_events_chain_and_stay_gapless_under_concurrent_writers(runtime: Runtime) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                with unit_of_work(runtime.sessions) as session:
                    runtime.audit.append(session, "test", {"writer": n, "i": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with runtime.sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    assert [e.seq for e in events] == list(range(1, 41))
    prev = "0" * 64
    for event in events:
        assert event.prev_hash == prev
        assert event.chain_hash == chain_hash(event.seq, prev, event.payload)
        prev = event.chain_hash


@pytest.mark.parametrize(
    "statement",
    ["UPDATE audit_events SET kind = 'forged'", "DELETE FROM audit_events"],
)
def test_database_refuses_to_rewrite_the_trail(runtime: Runtime, statement: str) -> None:
    with unit_of_work(runtime.sessions) as session:
        runtime.audit.append(session, "test", {"x": 1})
    with pytest.raises(DBAPIError, match="append-only"), unit_of_work(runtime.sessions) as session:
        session.execute(text(statement))
    with runtime.sessions() as session:
        assert session.scalars(select(AuditEvent.kind)).all() == ["test"]


def test_truncate_is_refused_on_postgres(runtime_factory: Callable[..., Runtime]) -> None:
    runtime = runtime_factory()
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    with pytest.raises(DBAPIError, match="append-only"), unit_of_work(runtime.sessions) as session:
        session.execute(text("TRUNCATE audit_events"))
