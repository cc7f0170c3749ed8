"""Appending to the hash-chained audit event log, and signing checkpoints of it.

Each event is canonical JSON with a gapless sequence number; ``chain_hash`` commits to the
previous one, and the leaf joins an RFC 6962 Merkle tree whose frontier lives in the single
``audit_head`` row. That row is locked by every writer (PostgreSQL row lock; SQLite's
BEGIN IMMEDIATE serialises writers), which keeps the sequence gapless. Every
``checkpoint_every`` events, and on demand, a checkpoint (size, chain head, Merkle root) is
signed with Ed25519 in the same transaction.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.audit.canonical import canonical_json
from gateway.audit.merkle import Frontier
from gateway.audit.merkle import leaf_hash as merkle_leaf
from gateway.audit.signing import Signer
from gateway.db.models import AuditCheckpoint, AuditEvent, AuditHead

DOMAIN = b"gw-audit-v1\0"
ORIGIN = "gateway-audit/v1"


def leaf_hash(payload: str) -> bytes:
    return merkle_leaf(payload.encode("utf-8"))


def chain_hash(seq: int, prev_hash_hex: str, payload: str) -> str:
    data = DOMAIN + seq.to_bytes(8, "big") + bytes.fromhex(prev_hash_hex) + leaf_hash(payload)
    return hashlib.sha256(data).hexdigest()


def checkpoint_note(size: int, root: bytes, chain_head: str) -> str:
    """The signed text (a transparency-log style note body)."""
    return f"{ORIGIN}\n{size}\n{base64.b64encode(root).decode()}\n{chain_head}\n"


@dataclass(frozen=True)
class AuditLog:
    """Writes events; signs a checkpoint every ``checkpoint_every`` events."""

    signer: Signer
    checkpoint_every: int = 1000

    def append(
        self,
        session: Session,
        kind: str,
        body: dict[str, Any],
        *,
        decision_id: str | None = None,
        tenant_id: str | None = None,
    ) -> AuditEvent:
        head = self._lock_head(session)
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
        frontier = Frontier.from_json(head.seq, json.loads(head.frontier or "[]"))
        frontier.append(leaf_hash(payload))
        head.seq = seq
        head.chain_hash = new_hash
        head.frontier = json.dumps(frontier.to_json())
        if self.checkpoint_every and seq % self.checkpoint_every == 0:
            self._sign(session, head, frontier)
        session.flush()
        return event

    def checkpoint(self, session: Session) -> AuditCheckpoint | None:
        """Sign a checkpoint at the current size (None if empty or already signed there)."""
        head = self._lock_head(session)
        if head.seq == 0 or session.get(AuditCheckpoint, head.seq) is not None:
            return None
        frontier = Frontier.from_json(head.seq, json.loads(head.frontier or "[]"))
        return self._sign(session, head, frontier)

    def _lock_head(self, session: Session) -> AuditHead:
        return session.scalars(select(AuditHead).where(AuditHead.id == 1).with_for_update()).one()

    def _sign(self, session: Session, head: AuditHead, frontier: Frontier) -> AuditCheckpoint:
        root = frontier.root()
        note = checkpoint_note(head.seq, root, head.chain_hash)
        checkpoint = AuditCheckpoint(
            size=head.seq,
            chain_head=head.chain_hash,
            merkle_root=root.hex(),
            frontier=json.dumps(frontier.to_json()),
            key_id=self.signer.key_id,
            note=note,
            signature=self.signer.sign(note.encode()),
            created_at=datetime.now(UTC),
        )
        session.add(checkpoint)
        return checkpoint


def checkpoint_json(cp: AuditCheckpoint) -> dict[str, Any]:
    return {
        "size": cp.size,
        "chain_head": cp.chain_head,
        "merkle_root": cp.merkle_root,
        "key_id": cp.key_id,
        "note": cp.note,
        "signature": cp.signature,
        "created_at": cp.created_at.isoformat() if cp.created_at else None,
    }
