"""Shared dependencies: the runtime, the caller (from the API key) and role checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from gateway.auth.keys import authenticate
from gateway.db.engine import unit_of_work
from gateway.domain import Principal, Role
from gateway.errors import GatewayError
from gateway.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _raw_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None
    return request.headers.get("api-key")


def get_principal(request: Request, runtime: RuntimeDep) -> Principal:
    raw = _raw_key(request)
    if not raw:
        raise GatewayError(
            401, "invalid_api_key", "no API key given; send Authorization: Bearer <key>"
        )
    pepper = runtime.settings.key_pepper.get_secret_value() if runtime.settings.key_pepper else ""
    with unit_of_work(runtime.sessions) as session:
        principal = authenticate(session, raw, pepper)
    if principal is None:
        raise GatewayError(401, "invalid_api_key", "the API key is not valid")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency that admits principals holding any of ``roles`` (admins always)."""

    def check(principal: PrincipalDep) -> Principal:
        if not any(principal.has(role) for role in roles):
            names = " or ".join(r.value for r in roles)
            raise GatewayError(403, "insufficient_role", f"this route needs the {names} role")
        return principal

    return check


Requester = Annotated[Principal, Depends(require(Role.REQUESTER))]
Auditor = Annotated[Principal, Depends(require(Role.AUDITOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
LegalEditor = Annotated[Principal, Depends(require(Role.LEGAL_EDITOR))]
LegalApprover = Annotated[Principal, Depends(require(Role.LEGAL_APPROVER))]
PolicyReader = Annotated[
    Principal, Depends(require(Role.LEGAL_EDITOR, Role.LEGAL_APPROVER, Role.AUDITOR))
]
