"""SQLAlchemy 2 tables. No business logic here."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    roles: Mapped[list[Any]] = mapped_column(JSON)
    label: Mapped[str | None] = mapped_column(String(200))
    default_intended_use: Mapped[str | None] = mapped_column(String(40))
    allowed_uses: Mapped[list[Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Decision(Base):
    """One row per accepted request: opened before any model runs, closed exactly once."""

    __tablename__ = "decisions"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    key_id: Mapped[str] = mapped_column(String(40))
    instance_id: Mapped[str] = mapped_column(String(200))
    user: Mapped[str | None] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))  # open | closed
    outcome: Mapped[str | None] = mapped_column(String(40))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    model_id: Mapped[str] = mapped_column(String(200))
    licence_id: Mapped[str | None] = mapped_column(String(200))
    intended_use: Mapped[str | None] = mapped_column(String(40))
    policy_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    record: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # ",cat1,cat2," of the categories that flagged (prompt or images), for search
    categories: Mapped[str] = mapped_column(String(200), default="")
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # 16 hex digits: the invisible watermark payload reserved for this decision's images
    watermark: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (
        Index("ix_decisions_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_decisions_created_id", "created_at", "id"),
        Index("ix_decisions_user", "user"),
        Index("ix_decisions_status", "status", "instance_id"),
        Index("ix_decisions_watermark", "watermark"),
    )


class AuditHead(Base):
    """A single row locked by every append: keeps the event sequence gapless."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    chain_hash: Mapped[str] = mapped_column(String(64))
    frontier: Mapped[str] = mapped_column(Text, default="[]")  # Merkle frontier (JSON)


class AuditEvent(Base):
    """Append-only, hash-chained event log (UPDATE/DELETE refused by triggers)."""

    __tablename__ = "audit_events"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(40))
    decision_id: Mapped[str | None] = mapped_column(String(40), index=True)
    tenant_id: Mapped[str | None] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON, the hashed bytes
    prev_hash: Mapped[str] = mapped_column(String(64))
    chain_hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed statement of the trail's size, chain head and Merkle root (append-only)."""

    __tablename__ = "audit_checkpoints"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    chain_head: Mapped[str] = mapped_column(String(64))
    merkle_root: Mapped[str] = mapped_column(String(64))
    frontier: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PersonalData(Base):
    """Prompt texts and user ids, outside the hashed events; the events hold salted HMACs.

    Deleting a row (erasure) leaves the chain verifiable.
    """

    __tablename__ = "personal_data"
    decision_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    field: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    salt: Mapped[str] = mapped_column(String(64))


class PolicyVersion(Base):
    """A whole policy bundle: a draft while editable, immutable once submitted.

    States: draft -> in_review -> published -> retired, or in_review -> rejected. A trigger
    refuses changes to ``files``/``sha256`` once a version has left the draft state, and
    refuses deletion.
    """

    __tablename__ = "policy_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    files: Mapped[str] = mapped_column(Text)  # canonical JSON {path: text}
    base_version: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)
    authors: Mapped[list[Any]] = mapped_column(JSON)  # principal ids that wrote any file
    created_by: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    submitted_by: Mapped[str | None] = mapped_column(String(120))
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(120))  # approver or rejecter
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str | None] = mapped_column(Text)
    effective_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditKey(Base):
    """A public key whose checkpoints verify accepts; a replica signs only with a registered one.

    Retiring keeps the key (its earlier checkpoints still verify) and records the trail's size
    then: a checkpoint it signs above that size is refused.
    """

    __tablename__ = "audit_keys"
    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    public_key: Mapped[str] = mapped_column(String(64))  # base64 of the raw Ed25519 key
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    note: Mapped[str | None] = mapped_column(String(200))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retired_at_seq: Mapped[int | None] = mapped_column(BigInteger)


class QuarantineImage(Base):
    """A quarantined image, kept where every replica can reveal it (the default store)."""

    __tablename__ = "quarantine_images"
    decision_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    image_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    mime: Mapped[str] = mapped_column(String(40))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    instance_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SharedSecret(Base):
    """The fingerprint of a secret every replica must share (console cookie key, watermark key,
    C2PA trust anchors), recorded by the first replica; a replica holding another refuses to
    start."""

    __tablename__ = "shared_secrets"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    instance_id: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
