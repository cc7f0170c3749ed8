"""Checking the readable copies (``decisions``, ``personal_data``) against the hashed events.

The hash chain protects ``audit_events`` only; search, exports, the console and the PDF read
``decisions`` and ``personal_data``, which are updated in place (a decision is closed, a
person erased). Each decision row must equal what its events commit to:

- the ``received`` event: tenant (the event's envelope), request, user, model, licence,
  intended use, policy version, key, instance and ``created_at`` (events written before
  these were committed carry no ``licence_id``, ``instance_id`` or ``created_at``: those
  columns are then not checked);
- the ``decided`` event, if any: outcome, HTTP status, error code, record, ``closed_at``;
  ``status`` is ``closed`` exactly when it exists, and ``categories`` is recomputed from the
  committed record; without it every closing column must be empty;
- an ``erasure`` event listing the decision: ``erased_at`` is set exactly when one exists.

Personal values are in events as ``{"hmac": HMAC-SHA256(salt, value)}``. Each must open with
its ``personal_data`` row, and the decision row must hold that value; when the decision was
erased after the event, the row is gone and the decision holds the erased form
(``[erased]``, or no ``user``). A ``personal_data`` row no event commits to, an event whose
decision row is gone, or a row with no events is a finding too. Records are compared as
whole JSON values, whatever they hold; a difference is named by its path, such as
``decisions.record.prompt.text`` or ``personal_data[received.request.prompt].value``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, select
from sqlalchemy.orm import Session

from gateway.audit.decisions import categories_column, stamp
from gateway.audit.events import chain_hash
from gateway.audit.row_bytes import rebuilt
from gateway.audit.row_diff import compare, open_committed
from gateway.db.models import AuditEvent, Decision, PersonalData

# received body key -> decisions column (compared when the event has the key)
_RECEIVED_COLUMNS = (
    "model_id",
    "key_id",
    "intended_use",
    "policy_version",
    "licence_id",
    "instance_id",
)
_DECIDED_COLUMNS = ("outcome", "http_status", "error_code")
_COLUMNS = (
    Decision.id,
    Decision.tenant_id,
    Decision.key_id,
    Decision.instance_id,
    Decision.user,
    Decision.status,
    Decision.outcome,
    Decision.http_status,
    Decision.error_code,
    Decision.model_id,
    Decision.licence_id,
    Decision.intended_use,
    Decision.policy_version,
    Decision.created_at,
    Decision.closed_at,
    Decision.request,
    Decision.record,
    Decision.categories,
    Decision.erased_at,
)
_EVENT_COLUMNS = (
    AuditEvent.decision_id,
    AuditEvent.seq,
    AuditEvent.kind,
    AuditEvent.tenant_id,
    AuditEvent.payload,
    AuditEvent.prev_hash,
    AuditEvent.chain_hash,
)
MAX_ERRORS = 1000  # findings kept in a report; the count goes on


@dataclass(frozen=True)
class RowError:
    """One stored value that its events do not commit to."""

    decision_id: str | None
    table: str
    field: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "table": self.table,
            "field": self.field,
            "reason": self.reason,
        }

    def __str__(self) -> str:
        return f"{self.decision_id} {self.field}: {self.reason}"


@dataclass(frozen=True)
class Erasure:
    seq: int
    erased_at: str | None  # None: an erasure event written before it committed the time


class Findings:
    """Row findings gathered while checking: the first ``MAX_ERRORS`` and their count."""

    def __init__(self) -> None:
        self.errors: list[RowError] = []
        self.count = 0
        self.rows_checked = 0

    def add(self, decision_id: str | None, table: str, field: str, reason: str) -> None:
        self.count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(RowError(decision_id, table, field, reason))


def load_erasures(session: Session) -> dict[str, Erasure]:
    """Every decision an ``erasure`` event lists (the first such event), by decision id.

    Erasures are rare; the map holds only erased decisions.
    """
    out: dict[str, Erasure] = {}
    rows = session.execute(
        select(AuditEvent.seq, AuditEvent.payload)
        .where(AuditEvent.kind == "erasure")
        .order_by(AuditEvent.seq)
    )
    for seq, payload in rows:
        event = json.loads(payload)
        if event.get("kind") != "erasure":
            continue  # a kind column that lies is caught where it matters: the data is missing
        body = event.get("body") or {}
        for decision_id in body.get("decision_ids") or []:
            out.setdefault(str(decision_id), Erasure(seq, body.get("erased_at")))
    return out


def check_all(
    session: Session, erasures: dict[str, Erasure], findings: Findings, *, batch: int = 1000
) -> None:
    """Check every decision, in keyset batches by id (constant memory).

    Each batch reads events and ``personal_data`` by a range of decision ids, so rows whose
    decision row is gone are seen too (the first and last ranges are open-ended).
    """
    after: str | None = None
    while True:
        query = select(*_COLUMNS).order_by(Decision.id).limit(batch)
        if after is not None:
            query = query.where(Decision.id > after)
        decisions = session.execute(query).all()
        last = decisions[-1].id if len(decisions) == batch else None
        _check_batch(session, decisions, _range(after, last), erasures, findings, False)
        if last is None:
            return
        after = last


def check_ids(
    session: Session, ids: Sequence[str], erasures: dict[str, Erasure], findings: Findings
) -> None:
    """Check these decisions (an export's batch); each event's own hash is recomputed too."""
    if not ids:
        return
    decisions = session.execute(select(*_COLUMNS).where(Decision.id.in_(ids))).all()
    _check_batch(session, decisions, ("in", ids), erasures, findings, True)
    for missing in set(ids) - {d.id for d in decisions}:
        findings.add(missing, "decisions", "id", "the decision row is gone")


_Where = tuple[str, Any]


def _range(after: str | None, last: str | None) -> _Where:
    return ("range", (after, last))


def _condition(column: Any, where: _Where) -> list[ColumnElement[bool]]:
    how, value = where
    if how == "in":
        return [column.in_(value)]
    after, last = value
    out: list[ColumnElement[bool]] = [column.is_not(None)]
    if after is not None:
        out.append(column > after)
    if last is not None:
        out.append(column <= last)
    return out


def _check_batch(
    session: Session,
    decisions: Sequence[Row[Any]],
    where: _Where,
    erasures: dict[str, Erasure],
    findings: Findings,
    self_hash: bool,
) -> None:
    events: dict[str, list[Any]] = {}
    for e in session.execute(
        select(*_EVENT_COLUMNS).where(*_condition(AuditEvent.decision_id, where))
    ):
        events.setdefault(str(e.decision_id), []).append(e)
    personal: dict[str, dict[str, tuple[str, str]]] = {}
    for decision_id, name, value, salt in session.execute(
        select(
            PersonalData.decision_id, PersonalData.field, PersonalData.value, PersonalData.salt
        ).where(*_condition(PersonalData.decision_id, where))
    ):
        personal.setdefault(decision_id, {})[name] = (value, salt)
    for d in decisions:
        _check_decision(
            d,
            events.pop(d.id, []),
            personal.pop(d.id, {}),
            erasures.get(d.id),
            findings,
            self_hash,
        )
        findings.rows_checked += 1
    for decision_id, orphans in events.items():
        seqs = ", ".join(str(e.seq) for e in orphans)
        findings.add(decision_id, "decisions", "id", f"row missing: events {seqs} commit to it")
    for decision_id, fields in personal.items():
        for name in fields:
            findings.add(
                decision_id,
                "personal_data",
                f"personal_data[{name}]",
                "no decision row: its decision is gone",
            )


def _check_decision(
    d: Row[Any],
    events: list[Row[Any]],
    personal: dict[str, tuple[str, str]],
    erasure: Erasure | None,
    findings: Findings,
    self_hash: bool,
) -> None:
    def bad(table: str, field: str, reason: str) -> None:
        findings.add(d.id, table, field, reason)

    events = sorted(events, key=lambda e: e.seq)
    if self_hash:
        for e in events:
            if chain_hash(e.seq, e.prev_hash, e.payload) != e.chain_hash:
                where = f"audit_events[{e.seq}].payload"
                bad("audit_events", where, "its hash does not match the chain")
    if erasure is None and d.erased_at is None and rebuilt(d, events, personal):
        _closing_columns(d, len(events) == 2, bad)
        return
    by_kind: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for e in events:
        where = f"audit_events[{e.seq}]"
        event = json.loads(e.payload)
        for column, stored in (("decision_id", d.id), ("kind", e.kind), ("tenant_id", e.tenant_id)):
            if event.get(column) != stored:
                bad(
                    "audit_events",
                    f"{where}.{column}",
                    f"differs from the hashed payload's {column}",
                )
        by_kind.setdefault(event.get("kind"), []).append((e.seq, event))
    received = by_kind.get("received", [])
    decided = by_kind.get("decided", [])
    if not received:
        bad("decisions", "decisions.id", "no received event commits to this decision")
        return
    for kind, found in (("received", received), ("decided", decided)):
        if len(found) > 1:
            seqs = ", ".join(str(s) for s, _ in found)
            bad("audit_events", f"audit_events[{found[1][0]}]", f"{kind} more than once ({seqs})")
    used: set[str] = set()
    erased_after = erasure.seq if erasure else None

    def opened(seq: int, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        return open_committed(body, kind, seq, personal, erased_after, used, bad)  # type: ignore[no-any-return]

    seq, event = received[0]
    body = opened(seq, "received", event.get("body") or {})
    if event.get("tenant_id") != d.tenant_id:
        bad("decisions", "decisions.tenant_id", f"differs from the received event (seq {seq})")
    for column in _RECEIVED_COLUMNS:
        if column in body:
            compare(bad, f"decisions.{column}", body[column], getattr(d, column), "received", seq)
    expected_user = body.get("user")
    compare(bad, "decisions.user", expected_user, d.user, "received", seq)
    compare(bad, "decisions.request", body.get("request"), d.request, "received", seq)
    if "created_at" in body and stamp(d.created_at) != body["created_at"]:
        bad("decisions", "decisions.created_at", f"differs from the received event (seq {seq})")
    if decided:
        seq, event = decided[0]
        body = opened(seq, "decided", event.get("body") or {})
        if d.status != "closed":
            bad("decisions", "decisions.status", f"not closed, but decided (seq {seq})")
        for column in _DECIDED_COLUMNS:
            compare(
                bad, f"decisions.{column}", body.get(column), getattr(d, column), "decided", seq
            )
        record = body.get("record")
        compare(bad, "decisions.record", record, d.record, "decided", seq)
        if isinstance(record, dict) and d.categories != categories_column(record):
            bad("decisions", "decisions.categories", f"not the decided record's (seq {seq})")
        closed = d.closed_at
        if "closed_at" in body and (closed is None or stamp(closed) != body["closed_at"]):
            bad("decisions", "decisions.closed_at", f"differs from the decided event (seq {seq})")
    else:
        if d.status != "open":
            bad("decisions", "decisions.status", f"{d.status!r}, but no decided event")
        for column in (*_DECIDED_COLUMNS, "closed_at", "record"):
            if getattr(d, column) is not None:
                bad("decisions", f"decisions.{column}", "set, but no decided event")
        if d.categories:
            bad("decisions", "decisions.categories", "set, but no decided event")
    if erasure is None and d.erased_at is not None:
        bad("decisions", "decisions.erased_at", "set, but no erasure event lists the decision")
    if erasure is not None:
        if d.erased_at is None:
            bad("decisions", "decisions.erased_at", f"empty, but erased (seq {erasure.seq})")
        elif erasure.erased_at is not None and stamp(d.erased_at) != erasure.erased_at:
            bad("decisions", "decisions.erased_at", f"differs from the erasure (seq {erasure.seq})")
    for name in personal.keys() - used:
        bad("personal_data", f"personal_data[{name}]", "no event commits to it")


def _closing_columns(d: Row[Any], decided: bool, bad: Any) -> None:
    """The columns no event holds as such: ``status``, and ``categories`` (derived)."""
    if decided:
        if d.status != "closed":
            bad("decisions", "decisions.status", f"{d.status!r}, but decided")
        if d.categories != categories_column(d.record):
            bad("decisions", "decisions.categories", "not the decided record's")
    elif d.status != "open":
        bad("decisions", "decisions.status", f"{d.status!r}, but no decided event")
    elif d.categories:
        bad("decisions", "decisions.categories", "set, but no decided event")
