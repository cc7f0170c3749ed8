"""Appending to the hash-chained audit event log, and signing checkpoints of it.

Each event is canonical JSON with a gapless sequence number; ``chain_hash`` commits to the
previous one, and the leaf joins an RFC 6962 Merkle tree whose frontier lives in the single
``audit_head`` row. That row is locked by every writer (PostgreSQL ``SELECT ... FOR UPDATE``;
SQLite's ``BEGIN IMMEDIATE`` serialises writers), which keeps the sequence gapless across
threads, processes and replicas. Every ``checkpoint_every`` events, and on demand, a
checkpoint (size, chain head, Merkle root) is signed with Ed25519 in the same transaction.

The head is cached per :class:`AuditLog`: under the lock a writer reads only the head's
``seq`` and ``chain_hash``; when both equal the cached ones (nobody else appended, and the
last writer's transaction committed) the cached Merkle frontier is used instead of parsing
the stored one. Equal chain hashes mean equal histories, so a stale cache is never used.
Several events (a batch from :mod:`gateway.audit.writer`) cost one head read, one
multi-row INSERT and one head UPDATE.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import JSON, Connection, Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from gateway.audit.canonical import canonical_json
from gateway.audit.merkle import Frontier
from gateway.audit.merkle import leaf_hash as merkle_leaf
from gateway.audit.signing import Signer
from gateway.db.models import AuditCheckpoint, AuditEvent, AuditHead, AuditKey, Base

log = logging.getLogger(__name__)

DOMAIN = b"gw-audit-v1\0"
ORIGIN = "gateway-audit/v1"


def leaf_hash(payload: str) -> bytes:
    return merkle_leaf(payload.encode("utf-8"))


def chain_hash(seq: int, prev_hash_hex: str, payload: str) -> str:
    data = DOMAIN + seq.to_bytes(8, "big") + bytes.fromhex(prev_hash_hex) + leaf_hash(payload)
    return hashlib.sha256(data).hexdigest()


class SigningKeyRetired(Exception):
    """This log's key was retired (``gateway audit keys retire``): it signs nothing more."""


def checkpoint_note(size: int, root: bytes, chain_head: str) -> str:
    """The signed text (a transparency-log style note body)."""
    return f"{ORIGIN}\n{size}\n{base64.b64encode(root).decode()}\n{chain_head}\n"


_HEAD_FOR_UPDATE = (
    select(AuditHead.seq, AuditHead.chain_hash).where(AuditHead.id == 1).with_for_update()
)
_HEAD_FRONTIER = select(AuditHead.frontier).where(AuditHead.id == 1)
_SET_HEAD = (
    update(AuditHead)
    .where(AuditHead.id == 1)
    .values(seq=bindparam("h_seq"), chain_hash=bindparam("h_hash"), frontier=bindparam("h_fr"))
)


def insert_many(conn: Connection, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """INSERT the rows, in the transaction open on ``conn``, in as few steps as possible.

    PostgreSQL: one ``COPY ... FROM STDIN`` (psycopg encodes the rows in C; an executemany
    costs a pipelined statement per row). SQLite: executemany, a loop inside the driver.
    """
    if not rows:
        return
    if conn.dialect.name != "postgresql" or len(rows) < 8:  # COPY costs 2 round trips
        conn.execute(insert(model), rows)
        return
    table = cast(Table, model.__table__)
    names = list(rows[0])
    as_json = {c.name for c in table.columns if isinstance(c.type, JSON)}
    quote = conn.dialect.identifier_preparer.quote
    copy_sql = f"COPY {quote(table.name)} ({', '.join(quote(n) for n in names)}) FROM STDIN"
    raw: Any = conn.connection.dbapi_connection  # the psycopg connection, same transaction
    with raw.cursor() as cursor, cursor.copy(copy_sql) as copy:
        for row in rows:
            copy.write_row(
                [
                    json.dumps(row[n]) if n in as_json and row[n] is not None else row[n]
                    for n in names
                ]
            )


@dataclass(frozen=True)
class EventSpec:
    """One event to append: its kind, body and the decision and tenant it belongs to."""

    kind: str
    body: dict[str, Any]
    decision_id: str | None = None
    tenant_id: str | None = None


@dataclass(frozen=True)
class _Head:
    seq: int
    chain_hash: str
    nodes: tuple[tuple[int, bytes], ...]


class _HeadCache:
    """The last head this log wrote or read (only touched while holding the head lock)."""

    def __init__(self) -> None:
        self.head: _Head | None = None
        self.reloads = 0  # how often the stored frontier had to be parsed (for tests)


@dataclass(frozen=True)
class AuditLog:
    """Writes events; signs a checkpoint every ``checkpoint_every`` events."""

    signer: Signer
    checkpoint_every: int = 1000
    _cache: _HeadCache = field(default_factory=_HeadCache, compare=False, repr=False)

    def append(
        self,
        session: Session,
        kind: str,
        body: dict[str, Any],
        *,
        decision_id: str | None = None,
        tenant_id: str | None = None,
    ) -> int:
        """Append one event in the caller's transaction; return its sequence number."""
        session.flush()  # rows the caller added must precede the event in the transaction
        spec = EventSpec(kind, body, decision_id, tenant_id)
        return self.append_many(session.connection(), [spec])[0]

    def append_many(self, conn: Connection, specs: Sequence[EventSpec]) -> list[int]:
        """Append events, in order, in the transaction open on ``conn``; return their seqs.

        The caller commits; until then the head row stays locked.
        """
        if not specs:
            return []
        head = self._locked_head(conn)
        seq, prev = head.seq, head.chain_hash
        frontier = Frontier(size=head.seq, nodes=list(head.nodes))
        occurred = datetime.now(UTC)
        when = occurred.isoformat().replace("+00:00", "Z")
        rows: list[dict[str, Any]] = []
        checkpoints: list[dict[str, Any]] = []
        seqs: list[int] = []
        for spec in specs:
            seq += 1
            payload = canonical_json(
                {
                    "seq": seq,
                    "kind": spec.kind,
                    "decision_id": spec.decision_id,
                    "tenant_id": spec.tenant_id,
                    "occurred_at": when,
                    "body": spec.body,
                }
            )
            leaf = leaf_hash(payload)
            new_hash = hashlib.sha256(
                DOMAIN + seq.to_bytes(8, "big") + bytes.fromhex(prev) + leaf
            ).hexdigest()
            frontier.append(leaf)
            rows.append(
                {
                    "seq": seq,
                    "kind": spec.kind,
                    "decision_id": spec.decision_id,
                    "tenant_id": spec.tenant_id,
                    "occurred_at": occurred,
                    "payload": payload,
                    "prev_hash": prev,
                    "chain_hash": new_hash,
                }
            )
            if (
                self.checkpoint_every
                and seq % self.checkpoint_every == 0
                and not self._key_retired(conn)
            ):
                checkpoints.append(self._checkpoint_row(seq, new_hash, frontier))
            seqs.append(seq)
            prev = new_hash
        insert_many(conn, AuditEvent, rows)
        conn.execute(
            _SET_HEAD, {"h_seq": seq, "h_hash": prev, "h_fr": json.dumps(frontier.to_json())}
        )
        insert_many(conn, AuditCheckpoint, checkpoints)
        # Remembered before the commit: if the caller rolls back, the stored head differs
        # from this one and the next writer reloads it.
        self._cache.head = _Head(seq, prev, tuple(frontier.nodes))
        return seqs

    def _locked_head(self, conn: Connection) -> _Head:
        seq, head_hash = conn.execute(_HEAD_FOR_UPDATE).one()
        cached = self._cache.head
        if cached is not None and cached.seq == seq and cached.chain_hash == head_hash:
            return cached
        frontier_json = conn.execute(_HEAD_FRONTIER).scalar_one()
        frontier = Frontier.from_json(seq, json.loads(frontier_json or "[]"))
        self._cache.reloads += 1
        return _Head(seq, head_hash, tuple(frontier.nodes))

    def checkpoint(self, session: Session) -> AuditCheckpoint | None:
        """Sign a checkpoint at the current size (None if empty or already signed there)."""
        session.flush()
        head = self._locked_head(session.connection())
        if self._key_retired(session.connection()):
            raise SigningKeyRetired(
                f"this replica's audit signing key {self.signer.key_id} was retired; restart "
                "it with a registered key (docs/audit.md, 'Signing keys and rotation')"
            )
        if head.seq == 0 or session.get(AuditCheckpoint, head.seq) is not None:
            return None
        frontier = Frontier(size=head.seq, nodes=list(head.nodes))
        checkpoint = AuditCheckpoint(**self._checkpoint_row(head.seq, head.chain_hash, frontier))
        session.add(checkpoint)
        session.flush()
        return checkpoint

    def _key_retired(self, conn: Connection) -> bool:
        """Whether the key was retired: read under the head lock, which retiring also takes, so
        a checkpoint is either signed before the retirement or not at all (verify would refuse
        it). A key that is not registered is refused at start, not here."""
        retired = conn.execute(
            select(AuditKey.retired_at).where(AuditKey.key_id == self.signer.key_id)
        ).scalar()
        if retired is not None:
            log.error(
                "audit signing key %s is retired: checkpoint not signed (restart this replica "
                "with a registered key)",
                self.signer.key_id,
            )
        return retired is not None

    def _checkpoint_row(self, size: int, head_hash: str, frontier: Frontier) -> dict[str, Any]:
        root = frontier.root()
        note = checkpoint_note(size, root, head_hash)
        return {
            "size": size,
            "chain_head": head_hash,
            "merkle_root": root.hex(),
            "frontier": json.dumps(frontier.to_json()),
            "key_id": self.signer.key_id,
            "note": note,
            "signature": self.signer.sign(note.encode()),
            "created_at": datetime.now(UTC),
        }


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
