"""API keys: created once, shown once, stored only as a hash.

A key looks like ``gk_<key id>_<secret>``. The id finds the row; the secret is compared
against its sha256 (mixed with an optional server pepper) in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.models import ApiKey, Tenant
from gateway.domain import INTENDED_USES, Principal, Role

PREFIX = "gk_"


@dataclass(frozen=True)
class CreatedKey:
    key_id: str
    tenant_id: str
    secret: str  # the full key; shown once, never stored


def hash_secret(secret: str, pepper: str = "") -> str:
    return hashlib.sha256(f"{pepper}\0{secret}".encode()).hexdigest()


def get_or_create_tenant(
    session: Session, name: str, facts: dict[str, Any] | None = None
) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(
            id="ten_" + uuid.uuid4().hex[:16],
            name=name,
            facts=dict(facts or {}),
            created_at=datetime.now(UTC),
        )
        session.add(tenant)
        session.flush()
    return tenant


def create_key(
    session: Session,
    *,
    tenant: str,
    roles: Iterable[Role],
    pepper: str = "",
    label: str | None = None,
    default_intended_use: str | None = None,
    allowed_uses: list[str] | None = None,
) -> CreatedKey:
    role_list = sorted({r.value for r in roles})
    if not role_list:
        raise ValueError("a key needs at least one role")
    for use in [default_intended_use, *(allowed_uses or [])]:
        if use is not None and use not in INTENDED_USES:
            raise ValueError(f"unknown intended use {use!r}; known: {', '.join(INTENDED_USES)}")
    if default_intended_use and allowed_uses and default_intended_use not in allowed_uses:
        raise ValueError("the default intended use must be one of the allowed uses")
    row_tenant = get_or_create_tenant(session, tenant)
    key_id = uuid.uuid4().hex[:12]
    secret = secrets.token_urlsafe(32)
    session.add(
        ApiKey(
            id=key_id,
            tenant_id=row_tenant.id,
            key_hash=hash_secret(secret, pepper),
            roles=role_list,
            label=label,
            default_intended_use=default_intended_use,
            allowed_uses=allowed_uses,
            created_at=datetime.now(UTC),
        )
    )
    session.flush()
    return CreatedKey(key_id=key_id, tenant_id=row_tenant.id, secret=f"{PREFIX}{key_id}_{secret}")


def authenticate(session: Session, raw: str, pepper: str = "") -> Principal | None:
    if not raw.startswith(PREFIX):
        return None
    key_id, sep, secret = raw[len(PREFIX) :].partition("_")
    if not sep or not key_id or not secret:
        return None
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        hash_secret(secret, pepper)  # same work either way
        return None
    if not hmac.compare_digest(row.key_hash, hash_secret(secret, pepper)):
        return None
    tenant = session.get(Tenant, row.tenant_id)
    if tenant is None:
        return None
    return Principal(
        key_id=row.id,
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        roles=frozenset(Role(r) for r in row.roles),
        default_intended_use=row.default_intended_use,
        allowed_uses=tuple(row.allowed_uses) if row.allowed_uses else None,
        tenant_facts=dict(tenant.facts or {}),
    )


def revoke_key(session: Session, key_id: str) -> datetime | None:
    """Revoke a key at once (idempotent); None when no such key exists."""
    row = session.get(ApiKey, key_id)
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.flush()
    return row.revoked_at


def count_keys(session: Session) -> int:
    return len(session.scalars(select(ApiKey.id)).all())
