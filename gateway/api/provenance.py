"""POST /v1/provenance/verify: was this image made here, under which decision and rights?"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import PrincipalDep, RuntimeDep
from gateway.api.responses import AUTHENTICATED, WITH_BODY, errors
from gateway.db.engine import unit_of_work
from gateway.domain import Role
from gateway.errors import GatewayError
from gateway.pipeline.image_input import ImageLimits, read_data_url
from gateway.pipeline.stages import StageFailure, run_stage
from gateway.provenance.verify import find_decision, inspect, verification_json

router = APIRouter(tags=["provenance"])


class VerifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    image: str = Field(
        max_length=30_000_000,
        json_schema_extra={"pattern": "^data:image/[^,]*;base64,"},  # checked when decoded
        description="a data:image/...;base64 URL (the gateway fetches nothing); PNG, JPEG, "
        "WebP or GIF",
    )


@router.post(
    "/v1/provenance/verify",
    responses=errors(*AUTHENTICATED, *WITH_BODY, 503),
)
def verify_provenance(
    body: VerifyBody, principal: PrincipalDep, runtime: RuntimeDep
) -> dict[str, Any]:
    """Any valid key. ``decision_id``, ``rights`` and ``decision`` only for the owning tenant
    (or an admin); ``issued_by_this_gateway`` for anyone."""
    decoded = read_data_url(body.image, "image", ImageLimits.from_settings(runtime.settings))
    try:
        found = run_stage(
            runtime.executor,
            "provenance_verify",
            lambda: inspect(runtime.provenance, decoded.raw, decoded.mime, decoded.image),
            runtime.settings.stage_timeout_s,
        )
    except StageFailure as failure:
        raise GatewayError(503, "provenance_unavailable", str(failure)) from failure
    with unit_of_work(runtime.sessions) as session:
        decision = find_decision(session, found)
        visible = decision is not None and (
            decision.tenant_id == principal.tenant_id or principal.has(Role.ADMIN)
        )
        return verification_json(found, decision, visible)
