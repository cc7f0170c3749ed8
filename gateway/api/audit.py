"""GET /v1/audit/decisions/{id}: the full decision record (auditors, own tenant)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.api.deps import Auditor, RuntimeDep
from gateway.audit.decisions import decision_json
from gateway.db.engine import unit_of_work
from gateway.db.models import Decision
from gateway.domain import Role
from gateway.errors import GatewayError

router = APIRouter(tags=["audit"])


@router.get("/v1/audit/decisions/{decision_id}")
def get_decision(decision_id: str, principal: Auditor, runtime: RuntimeDep) -> dict[str, Any]:
    with unit_of_work(runtime.sessions) as session:
        decision = session.get(Decision, decision_id)
        visible = decision is not None and (
            Role.ADMIN in principal.roles or decision.tenant_id == principal.tenant_id
        )
        if decision is None or not visible:
            raise GatewayError(
                404, "decision_not_found", f"no decision {decision_id!r}", param="decision_id"
            )
        return decision_json(decision)
