"""Tenants and their facts (revenue, registrations, agreements) that licence conditions read."""

from __future__ import annotations

from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.auth.keys import get_or_create_tenant
from gateway.db.models import Tenant


class TenantNotFound(Exception):
    pass


class TenantExists(Exception):
    pass


def parse_fact(assignment: str) -> tuple[str, Any]:
    """``key=value``; the value is read as YAML (numbers, true/false, null, strings)."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"fact {assignment!r} must look like key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict, list)):
        raise ValueError(f"fact {key!r} must be a number, true/false or text")
    return key, value


def create_tenant(session: Session, name: str, facts: dict[str, Any]) -> Tenant:
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise TenantExists(name)
    return get_or_create_tenant(session, name, facts)


def get_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise TenantNotFound(name)
    return tenant


def set_facts(
    session: Session, name: str, facts: dict[str, Any], unset: list[str] | None = None
) -> Tenant:
    tenant = get_tenant(session, name)
    merged = {**(tenant.facts or {}), **facts}
    for key in unset or []:
        merged.pop(key, None)
    tenant.facts = merged  # assign a new dict so the JSON column is marked dirty
    session.flush()
    return tenant


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.name)).all())


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {"id": tenant.id, "name": tenant.name, "facts": dict(tenant.facts or {})}
