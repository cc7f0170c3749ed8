"""The decision record: opened (``received``) before any model runs, closed exactly once.

Services take a session and never commit; callers wrap each call in a unit of work so the
decision row and its audit event commit together. Requests go through
:class:`gateway.audit.writer.DecisionWriter`, which writes the same rows (built by the
functions here) for many concurrent requests in one transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.audit.events import AuditLog, EventSpec
from gateway.audit.personal import personal_commitments
from gateway.db.models import Decision, PersonalData

Outcome = Literal[
    "allowed",  # every image delivered
    "partially_filtered",  # some images blocked or quarantined after generation
    "output_filtered",  # every image blocked or quarantined
    "prompt_blocked",
    "licence_denied",
    "model_unavailable",
    "queue_full",
    "cancelled",  # the client disconnected before its images were generated (recorded 499)
    "safety_system_unavailable",
    "aborted",  # the process died before the decision closed
    "failed",  # the closing write failed (database down); closed later by the reconciler
]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)


class DecisionAlreadyClosed(Exception):
    pass


@dataclass(frozen=True)
class Opening:
    tenant_id: str
    key_id: str
    instance_id: str
    user: str | None
    model_id: str
    licence_id: str | None
    intended_use: str | None
    policy_version: str
    request: dict[str, Any]
    watermark: str | None = None  # payload reserved for the images (provenance lookup)


def new_decision_id() -> str:
    return "dec_" + uuid.uuid4().hex


RECEIVED_PERSONAL = ("request.prompt", "request.negative_prompt", "request.user", "user")
DECIDED_PERSONAL = (
    "record.prompt.text",
    "record.prompt.normalised",
    "record.negative_prompt.text",
    "record.negative_prompt.normalised",
)


def decision_row(decision_id: str, opening: Opening, now: datetime) -> dict[str, Any]:
    """The ``decisions`` row of a just-opened decision."""
    return {
        "id": decision_id,
        "tenant_id": opening.tenant_id,
        "key_id": opening.key_id,
        "instance_id": opening.instance_id,
        "user": opening.user,
        "status": "open",
        "model_id": opening.model_id,
        "licence_id": opening.licence_id,
        "intended_use": opening.intended_use,
        "policy_version": opening.policy_version,
        "created_at": now,
        "request": opening.request,
        "categories": "",
        "watermark": opening.watermark,
    }


def stamp(value: datetime) -> str:
    """The text an event commits to for a stored time: UTC, microseconds, ``Z``.

    A naive value (SQLite gives times back without their zone) is read as UTC.
    """
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.isoformat(timespec="microseconds").replace("+00:00", "Z")


def received_event(
    decision_id: str, opening: Opening, created_at: datetime | None = None
) -> tuple[EventSpec, list[dict[str, str]]]:
    """The ``received`` event and the personal data it commits to.

    It commits to every column of the opened ``decisions`` row (``created_at`` when given):
    :mod:`gateway.audit.rows` checks the row against it.
    """
    body = received_body(opening, created_at)
    hashed, personal = personal_commitments(decision_id, "received", body, RECEIVED_PERSONAL)
    return EventSpec("received", hashed, decision_id, opening.tenant_id), personal


def received_body(opening: Opening, created_at: datetime | None) -> dict[str, Any]:
    """The ``received`` event's body before personal values are replaced by commitments."""
    body: dict[str, Any] = {
        "request": opening.request,
        "model_id": opening.model_id,
        "key_id": opening.key_id,
        "user": opening.user,
        "intended_use": opening.intended_use,
        "policy_version": opening.policy_version,
        "licence_id": opening.licence_id,
        "instance_id": opening.instance_id,
    }
    if created_at is not None:
        body["created_at"] = stamp(created_at)
    return body


def closing_values(
    outcome: str, http_status: int, error_code: str | None, record: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """The columns a decision's close sets."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    return {
        "status": "closed",
        "outcome": outcome,
        "http_status": http_status,
        "error_code": error_code,
        "closed_at": now,
        "record": record,
        "categories": categories_column(record),
    }


def decided_event(
    decision_id: str,
    tenant_id: str,
    outcome: str,
    http_status: int,
    error_code: str | None,
    record: dict[str, Any],
    closed_at: datetime | None = None,
) -> tuple[EventSpec, list[dict[str, str]]]:
    """The ``decided`` event and the personal data it commits to (and ``closed_at``)."""
    body = decided_body(outcome, http_status, error_code, record, closed_at)
    hashed, personal = personal_commitments(decision_id, "decided", body, DECIDED_PERSONAL)
    return EventSpec("decided", hashed, decision_id, tenant_id), personal


def decided_body(
    outcome: str | None,
    http_status: int | None,
    error_code: str | None,
    record: dict[str, Any] | None,
    closed_at: datetime | None,
) -> dict[str, Any]:
    """The ``decided`` event's body before personal values are replaced by commitments."""
    body: dict[str, Any] = {
        "outcome": outcome,
        "http_status": http_status,
        "error_code": error_code,
        "record": record,
    }
    if closed_at is not None:
        body["closed_at"] = stamp(closed_at)
    return body


def open_decision(session: Session, log: AuditLog, opening: Opening) -> Decision:
    """Open a decision in the caller's transaction (requests use :mod:`gateway.audit.writer`)."""
    now = datetime.now(UTC)
    decision = Decision(**decision_row(new_decision_id(), opening, now))
    session.add(decision)
    spec, personal = received_event(decision.id, opening, now)
    session.add_all(PersonalData(**row) for row in personal)
    log.append(
        session, spec.kind, spec.body, decision_id=spec.decision_id, tenant_id=spec.tenant_id
    )
    return decision


def close_decision(
    session: Session,
    log: AuditLog,
    decision_id: str,
    *,
    outcome: str,
    http_status: int,
    error_code: str | None,
    record: dict[str, Any],
) -> Decision:
    """Close a decision in the caller's transaction (requests use :mod:`gateway.audit.writer`)."""
    values = closing_values(outcome, http_status, error_code, record, datetime.now(UTC))
    decision = session.scalars(
        select(Decision).where(Decision.id == decision_id).with_for_update()
    ).one()
    if decision.status != "open":
        raise DecisionAlreadyClosed(decision_id)
    for key, value in values.items():
        setattr(decision, key, value)
    spec, personal = decided_event(
        decision.id,
        decision.tenant_id,
        outcome,
        http_status,
        error_code,
        record,
        values["closed_at"],
    )
    session.add_all(PersonalData(**row) for row in personal)
    log.append(
        session, spec.kind, spec.body, decision_id=spec.decision_id, tenant_id=spec.tenant_id
    )
    session.flush()
    return decision


def categories_column(record: dict[str, Any]) -> str:
    """ ",a,b," of every category that flagged on the prompt or an image (for search)."""
    found: set[str] = set()
    found.update(record.get("prompt", {}).get("assessment", {}).get("flagged", []))
    for image in record.get("images", []):
        found.update(image.get("assessment", {}).get("flagged", []))
    return "," + ",".join(sorted(found)) + "," if found else ""


def abort_open_decisions(
    session: Session, log: AuditLog, instance_id: str, reason: str
) -> list[str]:
    """Close this instance's decisions left open by a crash as ``aborted``; return their ids.

    Other replicas sharing the database keep theirs: they may still be running.
    """
    open_ids = session.scalars(
        select(Decision.id).where(Decision.status == "open", Decision.instance_id == instance_id)
    ).all()
    for decision_id in open_ids:
        close_decision(
            session,
            log,
            decision_id,
            outcome="aborted",
            http_status=0,
            error_code="aborted",
            record={"errors": [{"stage": "process", "message": reason}]},
        )
    return list(open_ids)


def decision_json(decision: Decision) -> dict[str, Any]:
    """The full decision record as the audit API shows it."""
    return {
        "id": decision.id,
        "object": "governance.decision",
        "tenant_id": decision.tenant_id,
        "key_id": decision.key_id,
        "instance_id": decision.instance_id,
        "user": decision.user,
        "status": decision.status,
        "outcome": decision.outcome,
        "http_status": decision.http_status,
        "error_code": decision.error_code,
        "model_id": decision.model_id,
        "licence_id": decision.licence_id,
        "intended_use": decision.intended_use,
        "policy_version": decision.policy_version,
        "created_at": _iso(decision.created_at),
        "closed_at": _iso(decision.closed_at),
        "request": decision.request,
        **(decision.record or {}),
    }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat().replace("+00:00", "Z")
