"""CSV and JSON Lines exports of decisions: one row per decision, streamed in batches.

The rows are read here and encoded by ``export_format.py``, as generators of chunks the HTTP
route and the command line share.
Memory stays constant. On PostgreSQL the export is one query in one read-only
snapshot, streamed in chunks (libpq's chunked rows mode): the server computes the next rows
while Python formats these, and nothing is planned twice. On SQLite, whose writers take
``BEGIN IMMEDIATE``, decisions are read in keyset batches (never OFFSET), each one query in
its own short transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    case,
    func,
    literal,
    literal_column,
    select,
    text,
    true,
)
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit.export_format import Row, csv_chunks, jsonl_chunks
from gateway.audit.keyring import KeyRing
from gateway.audit.search import DecisionFilters, Position, after_condition, iso_utc
from gateway.auth.names import Names, load_names
from gateway.db.engine import unit_of_work
from gateway.db.models import AuditEvent, Decision

FORMATS: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "pdf": "application/pdf",
}


# Read from the JSON columns inside the database, one parse of ``record`` per row (SQLite's
# multi-path json_extract, PostgreSQL's json_build_array): decoding whole records in Python
# would cost several times more. The API caps images at 4; past that, PostgreSQL's last path
# holds the whole images array (its one connection is busy streaming), and SQLite's the
# fifth image, a sign to read the record the slow way.
_MAX_IMAGES = 4
_PATHS: tuple[tuple[str | int, ...], ...] = (
    ("prompt", "normalised"),
    ("prompt", "assessment", "category_scores"),
    ("model", "weights_sha256"),
    ("licence", "decision"),
    ("rights",),
    *(("images", i, key) for i in range(_MAX_IMAGES) for key in ("sha256", "action")),
    ("images", _MAX_IMAGES),
)


def _packed(dialect: str) -> ColumnElement[Any]:
    """A JSON array text holding the value at each of ``_PATHS`` in ``decisions.record``."""
    if dialect == "sqlite":
        return func.json_extract(Decision.record, *(_sqlite_path(p) for p in _PATHS))
    # json operators re-parse the text at each step: convert to jsonb once per row instead
    # (OFFSET 0 keeps the planner from inlining the cast into every path)
    parts = ", ".join("j #> '{" + ",".join(str(p) for p in path) + "}'" for path in _PATHS[:-1])
    parts += f", CASE WHEN j #> '{{images,{_MAX_IMAGES}}}' IS NOT NULL THEN j -> 'images' END"
    return literal_column(
        f"(SELECT CAST(json_build_array({parts}) AS TEXT)"
        " FROM (SELECT CAST(decisions.record AS JSONB) AS j OFFSET 0) AS r)"
    )


def _sqlite_path(path: tuple[str | int, ...]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _prompt(dialect: str) -> ColumnElement[Any]:
    if dialect == "sqlite":
        return func.json_extract(Decision.request, "$.prompt")
    return literal_column("decisions.request ->> 'prompt'")


def _seq(kind: str) -> ColumnElement[Any]:
    return (
        select(AuditEvent.seq)
        .where(AuditEvent.decision_id == Decision.id, AuditEvent.kind == kind)
        .scalar_subquery()
    )


def _pg_time(column: Any) -> ColumnElement[Any]:
    """``iso_utc`` of a timestamptz, formatted by the server (no datetime built in Python)."""
    at_utc = func.timezone("UTC", column)
    whole = func.date_trunc("second", column) == column
    return func.to_char(
        at_utc,
        case(
            (whole, literal('YYYY-MM-DD"T"HH24:MI:SS"Z"')),
            else_=literal('YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        ),
    )


def _row_query(dialect: str, filters: DecisionFilters) -> Select[Any]:
    d = Decision
    if dialect == "postgresql":
        # both chain positions from one probe of ix_audit_events_decision_id, not two
        kind, seq = AuditEvent.kind, func.min(AuditEvent.seq)
        seqs = (
            select(
                seq.filter(kind == "received").label("received"),
                seq.filter(kind == "decided").label("decided"),
            )
            .where(AuditEvent.decision_id == d.id)
            .lateral("seqs")
        )
        query: Select[Any] = (
            select(
                d.id,
                _pg_time(d.created_at),
                _pg_time(d.closed_at),
                *_plain_columns(dialect),
                _pg_time(d.erased_at),
                _packed(dialect),
                seqs.c.received,
                seqs.c.decided,
            )
            .outerjoin(seqs, true())
            .where(*filters.conditions())
            .order_by(d.created_at, d.id)
        )
        return query
    return (
        select(
            d.id,
            d.created_at,
            d.closed_at,
            *_plain_columns(dialect),
            d.erased_at,
            _packed(dialect),
            _seq("received"),
            _seq("decided"),
        )
        .where(*filters.conditions())
        .order_by(d.created_at, d.id)
    )


def _plain_columns(dialect: str) -> tuple[Any, ...]:
    d = Decision
    return (
        d.tenant_id,
        d.user,
        d.key_id,
        d.status,
        d.outcome,
        d.http_status,
        d.error_code,
        _prompt(dialect),
        d.categories,
        d.model_id,
        d.licence_id,
        d.intended_use,
        d.policy_version,
    )


def _row(
    session: Session | None,
    r: Any,
    names: Names,
    time: Callable[[Any], str | None] = iso_utc,
) -> Row:
    """An export row from a query row; ``time`` formats its times (PostgreSQL's are text)."""
    (
        decision_id, created, closed, tenant, user, key, status, outcome, http_status, error_code,
        prompt, categories, model, licence, use, version, erased, packed, received, decided,
    ) = r  # fmt: skip
    values = json.loads(packed) if packed else [None] * len(_PATHS)
    normalised, scores, weights, licence_decision, rights = values[:5]
    shas, actions = values[5:-1:2], values[6:-1:2]
    if (more := values[-1]) is not None:  # more images than the packed paths cover
        if isinstance(more, list):
            images = more
        else:
            assert session is not None
            record = session.scalar(select(Decision.record).where(Decision.id == decision_id))
            images = (record or {}).get("images") or []
        shas, actions = [i.get("sha256") for i in images], [i.get("action") for i in images]
    return (
        decision_id,
        time(created),
        time(closed),
        tenant,
        names.tenant(tenant),
        user,
        key,
        names.key(key),
        status,
        outcome,
        http_status,
        error_code,
        prompt,
        normalised,
        [c for c in categories.split(",") if c] if categories else [],
        scores,
        model,
        weights,
        licence,
        licence_decision,
        use,
        rights,
        version,
        [x for x in shas if x is not None],
        [x for x in actions if x is not None],
        received,
        decided,
        time(erased),
        None,  # verified, verified_checkpoint, verification_error: see export_verify.py
        None,
        None,
    )


def flagged_categories(decision: Decision) -> list[str]:
    return [c for c in (decision.categories or "").split(",") if c]


def iter_row_batches(
    sessions: sessionmaker[Session],
    filters: DecisionFilters,
    *,
    batch: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> Iterator[list[Row]]:
    """Export rows (tuples in ``COLUMNS`` order) in batches, oldest first.

    PostgreSQL: one streamed query in one transaction. SQLite: one short transaction and one
    keyset query per batch; chain positions come from subqueries.
    """
    with unit_of_work(sessions) as session:
        names = load_names(session)
        if session.get_bind().dialect.name == "postgresql":
            yield from _streamed_batches(session, filters, batch, progress, names)
            return
    after: Position | None = None
    query: Select[Any] | None = None
    while True:
        with unit_of_work(sessions) as session:
            dialect = session.get_bind().dialect.name
            if dialect == "postgresql":  # compiling the plan costs more than running it
                session.execute(text("SET LOCAL jit = off"))
            if query is None:
                query = _row_query(dialect, filters)
            page = query if after is None else query.where(after_condition(after))
            raw = session.execute(page.limit(batch)).all()
            rows = [_row(session, r, names) for r in raw]
        if rows:
            after = (raw[-1][1], raw[-1][0])
            yield rows
            if progress is not None:
                progress(len(rows))
        if len(rows) < batch:
            return


def _text(value: Any) -> str | None:
    return value  # type: ignore[no-any-return]


def _streamed_batches(
    session: Session,
    filters: DecisionFilters,
    batch: int,
    progress: Callable[[int], None] | None,
    names: Names,
) -> Iterator[list[Row]]:
    """The PostgreSQL export: the whole query streamed in chunks of ``batch`` rows.

    psycopg's ``stream`` keeps the server working while these rows are formatted (a
    server-side cursor would wait for each FETCH); SQLAlchemy compiles the query and its
    parameters, psycopg runs it on the session's connection, inside its transaction.
    """
    session.execute(text("SET LOCAL jit = off"))  # compiling the plan costs more than running it
    connection = session.connection()
    dialect = connection.dialect
    compiled = _row_query(dialect.name, filters).compile(dialect=dialect)
    params = {}
    for name, value in compiled.params.items():
        processor = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        params[name] = processor(value) if processor else value
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with closing(cursor.stream(compiled.string, params, size=batch)) as stream:
        rows: list[Row] = []
        for r in stream:
            rows.append(_row(None, r, names, _text))
            if len(rows) == batch:
                yield rows
                if progress is not None:
                    progress(batch)
                rows = []
        if rows:
            yield rows
            if progress is not None:
                progress(len(rows))


def export_chunks(
    fmt: str,
    sessions: sessionmaker[Session],
    filters: DecisionFilters,
    *,
    batch: int = 1000,
    progress: Callable[[int], None] | None = None,
    public_key: str | KeyRing | None = None,
    verify: bool = True,
) -> Iterator[bytes]:
    """The encoded CSV or JSON Lines export of every decision matching ``filters``.

    Each row is verified against its events as it streams (``export_verify.py``), the chain
    from the last checkpoint signed by ``public_key`` (one key, or a ring of registered
    keys); without a key, or with ``verify``
    false, every row says it was not verified.
    """
    from gateway.audit.export_verify import verified_batches

    batches = verified_batches(
        sessions,
        iter_row_batches(sessions, filters, batch=batch, progress=progress),
        public_key,
        verify=verify,
    )
    if fmt == "csv":
        return csv_chunks(batches)
    if fmt == "jsonl":
        return jsonl_chunks(batches)
    raise ValueError(f"format must be csv or jsonl for a row export, got {fmt!r}")
