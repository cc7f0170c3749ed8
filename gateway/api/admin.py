"""/v1/admin: tenants (with their facts) and API keys. Admin role only."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import Admin, RuntimeDep
from gateway.api.responses import AUTHENTICATED, WITH_BODY, errors
from gateway.api.schemas import NO_NUL, IntendedUse
from gateway.auth.keys import create_key, revoke_key
from gateway.auth.tenants import (
    TenantExists,
    TenantNotFound,
    create_tenant,
    list_tenants,
    set_facts,
    tenant_json,
)
from gateway.db.engine import unit_of_work
from gateway.domain import Role
from gateway.errors import GatewayError

router = APIRouter(tags=["admin"], responses=errors(*AUTHENTICATED))

Fact = str | int | float | bool | None
RoleName = Literal[
    "requester", "legal_editor", "legal_approver", "auditor", "admin", "model_manager"
]


class TenantBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    facts: dict[str, Fact] = Field(default_factory=dict)


class FactsBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    facts: dict[str, Fact] = Field(default_factory=dict)
    unset: list[str] = Field(default_factory=list)


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    tenant: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    roles: list[RoleName] = Field(min_length=1)
    label: str | None = Field(default=None, max_length=200, pattern=NO_NUL)
    default_intended_use: IntendedUse | None = None
    allowed_uses: list[IntendedUse] | None = None


@router.get("/v1/admin/tenants")
def get_tenants(_: Admin, runtime: RuntimeDep) -> dict[str, Any]:
    with unit_of_work(runtime.sessions) as session:
        return {"object": "list", "data": [tenant_json(t) for t in list_tenants(session)]}


@router.post("/v1/admin/tenants", status_code=201, responses=errors(*WITH_BODY, 409))
def post_tenant(body: TenantBody, _: Admin, runtime: RuntimeDep) -> dict[str, Any]:
    try:
        with unit_of_work(runtime.sessions) as session:
            return tenant_json(create_tenant(session, body.name, dict(body.facts)))
    except TenantExists:
        raise GatewayError(
            409, "tenant_exists", f"tenant {body.name!r} exists", param="name"
        ) from None


@router.patch("/v1/admin/tenants/{name}", responses=errors(*WITH_BODY, 404))
def patch_tenant(name: str, body: FactsBody, _: Admin, runtime: RuntimeDep) -> dict[str, Any]:
    try:
        with unit_of_work(runtime.sessions) as session:
            return tenant_json(set_facts(session, name, dict(body.facts), body.unset))
    except TenantNotFound:
        raise GatewayError(404, "tenant_not_found", f"no tenant {name!r}", param="name") from None


@router.post("/v1/admin/keys", status_code=201, responses=errors(*WITH_BODY))
def post_key(body: KeyBody, _: Admin, runtime: RuntimeDep) -> dict[str, Any]:
    pepper = runtime.settings.key_pepper.get_secret_value() if runtime.settings.key_pepper else ""
    try:
        with unit_of_work(runtime.sessions) as session:
            created = create_key(
                session,
                tenant=body.tenant,
                roles=[Role(r) for r in body.roles],
                pepper=pepper,
                label=body.label,
                default_intended_use=body.default_intended_use,
                allowed_uses=list(body.allowed_uses) if body.allowed_uses else None,
            )
    except ValueError as exc:
        raise GatewayError(422, "invalid_request", str(exc), param="allowed_uses") from None
    return {
        "id": created.key_id,
        "tenant_id": created.tenant_id,
        "key": created.secret,
        "roles": sorted(set(body.roles)),
    }


@router.delete("/v1/admin/keys/{key_id}", responses=errors(404))
def delete_key(key_id: str, principal: Admin, runtime: RuntimeDep) -> dict[str, Any]:
    """Revoke a key: the next request (API or console) made with it is refused."""
    with unit_of_work(runtime.sessions) as session:
        revoked = revoke_key(session, key_id)
        if revoked is None:
            raise GatewayError(404, "key_not_found", f"no API key {key_id!r}", param="key_id")
        runtime.audit.append(
            session,
            "key.revoked",
            {"key_id": key_id, "by": f"key:{principal.key_id}"},
            tenant_id=principal.tenant_id,
        )
    return {"id": key_id, "revoked": True, "revoked_at": revoked.isoformat()}
