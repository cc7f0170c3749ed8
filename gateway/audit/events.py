"""Appending to the hash-chained audit event log.

Each event is canonical JSON with a gapless sequence number; ``chain_hash`` commits to the
previous one. The single ``audit_head`` row is locked in the writer's transaction, so the
sequence stays gapless under concurrent writers (PostgreSQL row lock; SQLite's BEGIN
IMMEDIATE serialises writers).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.audit.canonical import canonical_json
from gateway.db.models import AuditEvent, AuditHead

DOMAIN = b"gw-audit-v1\0"


def leaf_hash(payload: str) -> bytes:
    return hashlib.sha256(b"\x00" + payload.encode("utf-8")).digest()


def chain_hash(seq: int, prev_hash_hex: str, payload: str) -> str:
    data = DOMAIN + seq.to_bytes(8, "big") + bytes.fromhex(prev_hash_hex) + leaf_hash(payload)
    return hashlib.sha256(data).hexdigest()


def append_event(
    session: Session,
    kind: str,
    body: dict[str, Any],
    *,
    decision_id: str | None = None,
    tenant_id: str | None = None,
) -> AuditEvent:
    head = session.scalars(select(AuditHead).where(AuditHead.id == 1).with_for_update()).one()
    seq = head.seq + 1
    occurred = datetime.now(UTC)
    payload = canonical_json(
        {
            "seq": seq,
            "kind": kind,
            "decision_id": decision_id,
            "tenant_id": tenant_id,
            "occurred_at": occurred.isoformat().replace("+00:00", "Z"),
            "body": body,
        }
    )
    new_hash = chain_hash(seq, head.chain_hash, payload)
    event = AuditEvent(
        seq=seq,
        kind=kind,
        decision_id=decision_id,
        tenant_id=tenant_id,
        occurred_at=occurred,
        payload=payload,
        prev_hash=head.chain_hash,
        chain_hash=new_hash,
    )
    session.add(event)
    head.seq = seq
    head.chain_hash = new_hash
    session.flush()
    return event
