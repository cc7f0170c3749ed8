"""The decision record: opened (``received``) before any model runs, closed exactly once.

Services take a session and never commit; callers wrap each call in a unit of work so the
decision row and its audit event commit together.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.audit.events import AuditLog
from gateway.audit.personal import commit_personal
from gateway.db.models import Decision

OUTCOMES = (
    "allowed",  # every image delivered
    "partially_filtered",  # some images blocked or quarantined after generation
    "output_filtered",  # every image blocked or quarantined
    "prompt_blocked",
    "licence_denied",
    "model_unavailable",
    "queue_full",
    "safety_system_unavailable",
    "aborted",  # the process died before the decision closed
)


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


def new_decision_id() -> str:
    return "dec_" + uuid.uuid4().hex


RECEIVED_PERSONAL = ("request.prompt", "request.negative_prompt", "request.user", "user")
DECIDED_PERSONAL = (
    "record.prompt.text",
    "record.prompt.normalised",
    "record.negative_prompt.text",
    "record.negative_prompt.normalised",
)


def open_decision(session: Session, log: AuditLog, opening: Opening) -> Decision:
    decision = Decision(
        id=new_decision_id(),
        tenant_id=opening.tenant_id,
        key_id=opening.key_id,
        instance_id=opening.instance_id,
        user=opening.user,
        status="open",
        model_id=opening.model_id,
        licence_id=opening.licence_id,
        intended_use=opening.intended_use,
        policy_version=opening.policy_version,
        created_at=datetime.now(UTC),
        request=opening.request,
    )
    session.add(decision)
    session.flush()
    body = {
        "request": opening.request,
        "model_id": opening.model_id,
        "key_id": opening.key_id,
        "user": opening.user,
        "intended_use": opening.intended_use,
        "policy_version": opening.policy_version,
    }
    log.append(
        session,
        "received",
        commit_personal(session, decision.id, "received", body, RECEIVED_PERSONAL),
        decision_id=decision.id,
        tenant_id=opening.tenant_id,
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
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}")
    decision = session.scalars(
        select(Decision).where(Decision.id == decision_id).with_for_update()
    ).one()
    if decision.status != "open":
        raise DecisionAlreadyClosed(decision_id)
    decision.status = "closed"
    decision.outcome = outcome
    decision.http_status = http_status
    decision.error_code = error_code
    decision.closed_at = datetime.now(UTC)
    decision.record = record
    decision.categories = _categories(record)
    body = {
        "outcome": outcome,
        "http_status": http_status,
        "error_code": error_code,
        "record": record,
    }
    log.append(
        session,
        "decided",
        commit_personal(session, decision.id, "decided", body, DECIDED_PERSONAL),
        decision_id=decision.id,
        tenant_id=decision.tenant_id,
    )
    session.flush()
    return decision


def _categories(record: dict[str, Any]) -> str:
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
