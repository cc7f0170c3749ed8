"""Erasing one person's prompts without breaking verification.

The hashed events hold only salted HMAC commitments of prompts and user ids; erasure deletes
the values and salts (``personal_data``) and blanks the readable copies in ``decisions``.
The erasure itself is recorded as an audit event listing the decisions it touched.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from gateway.audit.decisions import DECIDED_PERSONAL, RECEIVED_PERSONAL, stamp
from gateway.audit.events import AuditLog
from gateway.db.models import Decision, PersonalData

ERASED = "[erased]"


def _blank(data: dict[str, Any] | None, paths: tuple[str, ...], prefix: str) -> dict[str, Any]:
    out = copy.deepcopy(data or {})
    for path in paths:
        parts = path.split(".")
        if parts[0] != prefix:
            continue
        node: Any = out
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(parts[-1]), str):
            node[parts[-1]] = ERASED
    return out


def erase_user(
    session: Session, log: AuditLog, user: str, *, tenant_id: str | None = None
) -> list[str]:
    query = select(Decision).where(Decision.user == user)
    if tenant_id is not None:
        query = query.where(Decision.tenant_id == tenant_id)
    decisions = list(session.scalars(query.with_for_update()))
    ids = [d.id for d in decisions]
    if not ids:
        return []
    session.execute(delete(PersonalData).where(PersonalData.decision_id.in_(ids)))
    now = datetime.now(UTC)
    for d in decisions:
        d.request = _blank({"request": d.request}, RECEIVED_PERSONAL, "request")["request"]
        d.record = _blank({"record": d.record}, DECIDED_PERSONAL, "record")["record"]
        d.user = None
        d.erased_at = now
    log.append(
        session,
        "erasure",
        {"decision_ids": ids, "fields": "prompts and user id", "erased_at": stamp(now)},
        tenant_id=tenant_id,
    )
    session.flush()
    return ids
