"""CSV and JSON Lines exports of decisions: one row per decision, streamed in batches.

The writers are generators of encoded chunks, so the HTTP route and the command line share
them. Memory stays constant: decisions are read in keyset batches (never OFFSET), each one
query in its own short transaction, with the chain positions as subqueries of that query.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import ColumnElement, Select, func, literal_column, select, text
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit.search import DecisionFilters, Position, after_condition, iso_utc
from gateway.db.engine import unit_of_work
from gateway.db.models import AuditEvent, Decision

FORMATS: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
    "pdf": "application/pdf",
}

COLUMNS: tuple[str, ...] = (
    "decision_id",
    "created_at",
    "closed_at",
    "tenant_id",
    "user",
    "status",
    "outcome",
    "http_status",
    "error_code",
    "prompt",
    "normalised_prompt",
    "flagged_categories",
    "category_scores",
    "model_id",
    "weights_sha256",
    "licence_id",
    "licence_decision",
    "intended_use",
    "rights",
    "policy_version",
    "image_sha256s",
    "image_actions",
    "received_seq",
    "decided_seq",
    "erased_at",
)

Row = tuple[Any, ...]

# Read from the JSON columns inside the database, one parse of ``record`` per row (SQLite's
# multi-path json_extract, PostgreSQL's json_build_array): decoding whole records in Python
# would cost several times more. The API caps images at 4; a fifth one is read the slow way.
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
    parts = ", ".join("j #> '{" + ",".join(str(p) for p in path) + "}'" for path in _PATHS)
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


def _row_query(dialect: str, filters: DecisionFilters) -> Select[Any]:
    d = Decision
    return (
        select(
            d.id,
            d.created_at,
            d.closed_at,
            d.tenant_id,
            d.user,
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
            d.erased_at,
            _packed(dialect),
            _seq("received"),
            _seq("decided"),
        )
        .where(*filters.conditions())
        .order_by(d.created_at, d.id)
    )


def _row(session: Session, r: Any) -> Row:
    (
        decision_id, created, closed, tenant, user, status, outcome, http_status, error_code,
        prompt, categories, model, licence, use, version, erased, packed, received, decided,
    ) = r  # fmt: skip
    values = json.loads(packed) if packed else [None] * len(_PATHS)
    normalised, scores, weights, licence_decision, rights = values[:5]
    shas, actions = values[5:-1:2], values[6:-1:2]
    if values[-1] is not None:  # more images than the packed paths cover
        record = session.scalar(select(Decision.record).where(Decision.id == decision_id))
        images = (record or {}).get("images") or []
        shas, actions = [i.get("sha256") for i in images], [i.get("action") for i in images]
    return (
        decision_id,
        iso_utc(created),
        iso_utc(closed),
        tenant,
        user,
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
        iso_utc(erased),
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

    One short transaction and one query per batch; chain positions come from subqueries.
    """
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
            rows = [_row(session, r) for r in raw]
        if rows:
            after = (raw[-1][1], raw[-1][0])
            yield rows
            if progress is not None:
                progress(len(rows))
        if len(rows) < batch:
            return


def row_json(row: Row) -> dict[str, Any]:
    return dict(zip(COLUMNS, row, strict=True))


def csv_chunks(batches: Iterable[list[Row]]) -> Iterator[bytes]:
    """A header, then one UTF-8 chunk per batch. Lists are ';'-joined, objects are JSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    yield _drain(buffer)
    for rows in batches:
        writer.writerows(map(_csv_row, rows))
        yield _drain(buffer)


def jsonl_chunks(batches: Iterable[list[Row]]) -> Iterator[bytes]:
    """One JSON object per line, one UTF-8 chunk per batch."""
    for rows in batches:
        yield "".join(_json(row_json(row)) + "\n" for row in rows).encode("utf-8")


def export_chunks(
    fmt: str,
    sessions: sessionmaker[Session],
    filters: DecisionFilters,
    *,
    batch: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """The encoded CSV or JSON Lines export of every decision matching ``filters``."""
    batches = iter_row_batches(sessions, filters, batch=batch, progress=progress)
    if fmt == "csv":
        return csv_chunks(batches)
    if fmt == "jsonl":
        return jsonl_chunks(batches)
    raise ValueError(f"format must be csv or jsonl for a row export, got {fmt!r}")


_LIST_AT = tuple(COLUMNS.index(c) for c in ("flagged_categories", "image_sha256s", "image_actions"))
_OBJECT_AT = tuple(COLUMNS.index(c) for c in ("category_scores", "rights"))
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _csv_row(row: Row) -> list[Any]:
    cells = list(row)  # None is written as an empty cell
    for i in _LIST_AT:
        cells[i] = ";".join(cells[i])
    for i in _OBJECT_AT:
        if cells[i] is not None:
            cells[i] = _json(cells[i])
    return cells


def _drain(buffer: io.StringIO) -> bytes:
    data = buffer.getvalue().encode("utf-8")
    buffer.seek(0)
    buffer.truncate()
    return data
