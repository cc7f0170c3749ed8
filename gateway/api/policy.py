"""POST /v1/policy/evaluate: the licence (and optionally content) check, without generating."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import Requester, RuntimeDep
from gateway.api.responses import AUTHENTICATED, WITH_BODY, errors
from gateway.api.schemas import IntendedUse
from gateway.auth.tenants import TenantNotFound, get_tenant
from gateway.db.engine import unit_of_work
from gateway.domain import Direction, Role
from gateway.errors import GatewayError
from gateway.pipeline.stages import StageFailure, run_stage
from gateway.policy.content import judge_text
from gateway.policy.evaluate import evaluate_model

router = APIRouter(tags=["policy"])


class EvaluateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str = Field(min_length=1, max_length=200)
    intended_use: IntendedUse
    tenant: str | None = Field(default=None, max_length=200, description="admins only")
    prompt: str | None = Field(default=None, min_length=1, max_length=4000)


@router.post("/v1/policy/evaluate", responses=errors(*AUTHENTICATED, *WITH_BODY, 404, 503))
def evaluate(body: EvaluateBody, principal: Requester, runtime: RuntimeDep) -> dict[str, Any]:
    bundle = runtime.bundle
    if body.model not in bundle.models.models:
        raise GatewayError(
            404, "model_not_found", f"model {body.model!r} is not registered", param="model"
        )
    facts = principal.tenant_facts
    tenant_name = principal.tenant_name
    if body.tenant is not None and body.tenant != principal.tenant_name:
        if Role.ADMIN not in principal.roles:
            raise GatewayError(
                403,
                "insufficient_role",
                "only admins may evaluate for another tenant",
                param="tenant",
            )
        try:
            with unit_of_work(runtime.sessions) as session:
                facts = dict(get_tenant(session, body.tenant).facts or {})
        except TenantNotFound:
            raise GatewayError(
                404, "tenant_not_found", f"no tenant {body.tenant!r}", param="tenant"
            ) from None
        tenant_name = body.tenant
    verdict = evaluate_model(bundle, body.model, body.intended_use, facts)
    out: dict[str, Any] = {
        **verdict.to_json(),
        "tenant": tenant_name,
        "model": body.model,
        "policy_version": bundle.version,
    }
    if body.prompt is not None:
        prompt = body.prompt
        try:
            scores = run_stage(
                runtime.executor,
                "prompt_classifier",
                lambda: runtime.prompt_classifier.classify([prompt]),
                runtime.settings.stage_timeout_s,
            )
        except StageFailure as failure:
            raise GatewayError(503, "safety_system_unavailable", str(failure)) from failure
        assessment = judge_text(bundle.content, scores[0], Direction.PROMPT)
        out["prompt_assessment"] = assessment.to_json()
        if assessment.action == "block":
            out["decision"] = "deny"
    return out
