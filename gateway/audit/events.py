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

from sqlalchemy import insert, select, update
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
    ) -> int:
        """Append one event in the caller's transaction; return its sequence number.

        Plain SQL statements (no ORM unit of work): this runs twice per request.
        """
        session.flush()  # rows the caller added must precede the event in the transaction
        seq0, prev, frontier_json = session.execute(
            select(AuditHead.seq, AuditHead.chain_hash, AuditHead.frontier)
            .where(AuditHead.id == 1)
            .with_for_update()
        ).one()
        seq = seq0 + 1
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
        new_hash = chain_hash(seq, prev, payload)
        frontier = Frontier.from_json(seq0, json.loads(frontier_json or "[]"))
        frontier.append(leaf_hash(payload))
        session.execute(
            insert(AuditEvent).values(
                seq=seq,
                kind=kind,
                decision_id=decision_id,
                tenant_id=tenant_id,
                occurred_at=occurred,
                payload=payload,
                prev_hash=prev,
                chain_hash=new_hash,
            )
        )
        session.execute(
            update(AuditHead)
            .where(AuditHead.id == 1)
            .values(seq=seq, chain_hash=new_hash, frontier=json.dumps(frontier.to_json()))
            .execution_options(synchronize_session=False)
        )
        if self.checkpoint_every and seq % self.checkpoint_every == 0:
            self._sign(session, seq, new_hash, frontier)
        return seq

    def checkpoint(self, session: Session) -> AuditCheckpoint | None:
        """Sign a checkpoint at the current size (None if empty or already signed there)."""
        session.flush()
        seq, head_hash, frontier_json = session.execute(
            select(AuditHead.seq, AuditHead.chain_hash, AuditHead.frontier)
            .where(AuditHead.id == 1)
            .with_for_update()
        ).one()
        if seq == 0 or session.get(AuditCheckpoint, seq) is not None:
            return None
        frontier = Frontier.from_json(seq, json.loads(frontier_json or "[]"))
        return self._sign(session, seq, head_hash, frontier)

    def _sign(
        self, session: Session, size: int, head_hash: str, frontier: Frontier
    ) -> AuditCheckpoint:
        root = frontier.root()
        note = checkpoint_note(size, root, head_hash)
        checkpoint = AuditCheckpoint(
            size=size,
            chain_head=head_hash,
            merkle_root=root.hex(),
            frontier=json.dumps(frontier.to_json()),
            key_id=self.signer.key_id,
            note=note,
            signature=self.signer.sign(note.encode()),
            created_at=datetime.now(UTC),
        )
        session.add(checkpoint)
        session.flush()
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
