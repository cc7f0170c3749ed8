"""The audit public keys registered in the database (``audit_keys``), shared by every replica.

Each replica signs checkpoints with its own key (``GATEWAY_AUDIT_SIGNING_KEY`` or the one in
its data dir); verify accepts a checkpoint when the key id it carries names a registered key
and the signature holds. A replica whose key is not registered (or is retired) refuses to
start. The very first start registers its key by itself when no key has ever been
registered (``GATEWAY_AUDIT_KEY_AUTO_REGISTER``, on by default), so a single node works out of
the box; every other key is registered by an operator (``gateway audit keys register``).

Retiring a key keeps it: the checkpoints it signed until then still verify, and the trail's
size at that moment is recorded, so a checkpoint it signs later is refused.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from gateway.audit.signing import Signer, key_id_of, verify_signature
from gateway.db.models import AuditCheckpoint, AuditHead, AuditKey

KeyStatus = Literal["active", "retired"]


class KeyNotRegistered(Exception):
    """This replica's signing key is not (or no longer) accepted: it must not start."""


class KeyRegistryError(ValueError):
    """A register or retire request that cannot be carried out (the message says why)."""


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    public_key: str  # base64 of the raw 32-byte Ed25519 key
    status: KeyStatus = "active"
    registered_at: datetime | None = None
    retired_at: datetime | None = None
    retired_at_seq: int | None = None  # checkpoints above this size are refused
    note: str | None = None

    @classmethod
    def of(cls, row: AuditKey) -> TrustedKey:
        return cls(
            row.key_id,
            row.public_key,
            "retired" if row.retired_at is not None else "active",
            row.registered_at,
            row.retired_at,
            row.retired_at_seq,
            row.note,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "key_id": self.key_id,
            "public_key": self.public_key,
            "status": self.status,
            "registered_at": self.registered_at.isoformat() if self.registered_at else None,
            "retired_at": self.retired_at.isoformat() if self.retired_at else None,
            "retired_at_seq": self.retired_at_seq,
            "note": self.note,
        }


class KeyRing:
    """The keys a verification accepts, by key id."""

    def __init__(self, keys: Iterable[TrustedKey]) -> None:
        self.keys: Mapping[str, TrustedKey] = {k.key_id: k for k in keys}

    @classmethod
    def single(cls, public_b64: str) -> KeyRing:
        """Only this key (an auditor's pinned key, or an offline check)."""
        public_b64 = public_b64.strip()
        return cls([TrustedKey(key_id_of(public_b64), public_b64)])

    @classmethod
    def registered(cls, session: Session) -> KeyRing:
        return cls(list_keys(session))

    def problem(self, cp: AuditCheckpoint) -> str | None:
        """Why ``cp``'s signature is not accepted (None: it is)."""
        key = self.keys.get(cp.key_id)
        if key is None:
            known = ", ".join(sorted(self.keys)) or "none"
            return f"bad signature: key {cp.key_id} is not an accepted key (accepted: {known})"
        if key.retired_at_seq is not None and cp.size > key.retired_at_seq:
            return (
                f"signed with key {cp.key_id} after it was retired at trail size "
                f"{key.retired_at_seq}"
            )
        if not verify_signature(key.public_key, cp.note.encode(), cp.signature):
            return f"bad signature (key {cp.key_id})"
        return None


def parse_public_key(value: str) -> str:
    """A base64 raw Ed25519 public key, checked; the normalised text."""
    value = value.strip()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise KeyRegistryError("a public key is the base64 of 32 bytes (audit-signing-key.pub)")
    return base64.b64encode(raw).decode()


def list_keys(session: Session) -> list[TrustedKey]:
    rows = session.scalars(select(AuditKey).order_by(AuditKey.registered_at, AuditKey.key_id))
    return [TrustedKey.of(row) for row in rows]


def register_key(session: Session, public_b64: str, note: str | None = None) -> TrustedKey:
    """Register a public key (idempotent for an active key; a retired key stays retired)."""
    public_b64 = parse_public_key(public_b64)
    key_id = key_id_of(public_b64)
    row = session.get(AuditKey, key_id)
    if row is not None:
        if row.retired_at is not None:
            raise KeyRegistryError(
                f"key {key_id} was retired at trail size {row.retired_at_seq}; a retired key "
                "is not registered again (make a new one)"
            )
        return TrustedKey.of(row)
    row = AuditKey(key_id=key_id, public_key=public_b64, registered_at=datetime.now(UTC), note=note)
    session.add(row)
    session.flush()
    return TrustedKey.of(row)


def retire_key(session: Session, key_id: str) -> TrustedKey:
    """Retire a key at the trail's current size (the head row is locked meanwhile)."""
    row = session.get(AuditKey, key_id, with_for_update=True)
    if row is None:
        raise KeyRegistryError(f"no registered key {key_id!r}")
    if row.retired_at is not None:
        return TrustedKey.of(row)
    active = session.scalars(select(AuditKey.key_id).where(AuditKey.retired_at.is_(None))).all()
    if list(active) == [key_id]:
        raise KeyRegistryError(
            f"key {key_id} is the only active key: register its successor first, or no "
            "replica could start"
        )
    head = session.get(AuditHead, 1, with_for_update=True)  # no checkpoint is signed meanwhile
    row.retired_at = datetime.now(UTC)
    row.retired_at_seq = head.seq if head is not None else 0
    session.flush()
    return TrustedKey.of(row)


def ensure_registered(session: Session, signer: Signer, *, auto_register: bool) -> bool:
    """Check that ``signer``'s key is registered and active; True when this call registered it.

    With ``auto_register``, the key is registered when no key has ever been registered (the
    first start). Raises :class:`KeyNotRegistered` otherwise.
    """
    if session.get_bind().dialect.name == "postgresql":
        # two replicas starting together on an empty table: one registers, the other waits
        session.execute(text("LOCK TABLE audit_keys IN SHARE ROW EXCLUSIVE MODE"))
    row = session.get(AuditKey, signer.key_id)
    if row is not None and row.retired_at is None:
        return False
    if row is not None:
        raise KeyNotRegistered(
            f"this replica's audit signing key {signer.key_id} was retired at "
            f"{row.retired_at:%Y-%m-%d %H:%M} UTC; give it a registered key "
            "(GATEWAY_AUDIT_SIGNING_KEY) — see docs/audit.md, 'Signing keys and rotation'"
        )
    if auto_register and session.scalar(select(AuditKey.key_id).limit(1)) is None:
        register_key(session, signer.public_key_b64, note="registered by the first start")
        return True
    raise KeyNotRegistered(
        f"this replica's audit signing key {signer.key_id} is not registered, so its "
        "checkpoints would not verify. Give every replica the same key "
        "(GATEWAY_AUDIT_SIGNING_KEY), or register this one first: "
        f"`gateway audit keys register --public-key {signer.public_key_b64}` "
        "(docs/audit.md, 'Signing keys and rotation')"
    )
