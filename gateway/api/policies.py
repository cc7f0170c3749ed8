"""/v1/policies: versions, drafts, validation, tests, replay and four-eyes publishing.

Thin: every route calls ``PolicyService`` (``gateway/policy/workflow.py``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import LegalApprover, LegalEditor, PolicyReader, RuntimeDep
from gateway.api.schemas import ErrorBody
from gateway.errors import GatewayError
from gateway.policy.replay import MAX_LIMIT
from gateway.policy.workflow import PolicyService

router = APIRouter(prefix="/v1/policies", tags=["policies"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    c: {"model": ErrorBody} for c in (401, 403, 404, 409, 422)
}

Files = dict[str, str | None]


class DraftBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_version: int | None = Field(default=None, ge=1, description="default: the active one")
    files: Files = Field(
        default_factory=dict, description="path -> content (overlays the base); null deletes"
    )
    note: str | None = Field(default=None, max_length=4000)


class DraftUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: Files = Field(description="path -> content (overlays the draft); null deletes")
    note: str | None = Field(default=None, max_length=4000)


class ReplayBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=1000, ge=1, le=MAX_LIMIT)
    since: datetime | None = None


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    effective_at: datetime | None = Field(default=None, description="schedule the switch")


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=4000)


def _service(runtime: RuntimeDep) -> PolicyService:
    return PolicyService(runtime)


@router.get("/active", responses=_ERRORS)
def active(_: PolicyReader, runtime: RuntimeDep) -> dict[str, Any]:
    return _service(runtime).active()


@router.get("/versions", responses=_ERRORS)
def versions(_: PolicyReader, runtime: RuntimeDep) -> dict[str, Any]:
    return {"data": _service(runtime).versions()}


@router.get("/versions/{version_id}", responses=_ERRORS)
def version(version_id: int, _: PolicyReader, runtime: RuntimeDep) -> dict[str, Any]:
    return _service(runtime).version(version_id)


@router.get("/versions/{a}/diff/{b}", responses=_ERRORS)
def diff(a: int, b: int, _: PolicyReader, runtime: RuntimeDep) -> dict[str, Any]:
    return _service(runtime).diff(a, b)


@router.post("/drafts", status_code=201, responses=_ERRORS)
def create_draft(body: DraftBody, principal: LegalEditor, runtime: RuntimeDep) -> dict[str, Any]:
    return _service(runtime).create_draft(principal, body.base_version, body.files, body.note)


@router.put("/drafts/{draft_id}", responses=_ERRORS)
def update_draft(
    draft_id: int, body: DraftUpdate, principal: LegalEditor, runtime: RuntimeDep
) -> dict[str, Any]:
    return _service(runtime).update_draft(principal, draft_id, body.files, body.note)


@router.post("/drafts/{draft_id}/validate", responses=_ERRORS)
def validate(draft_id: int, _: PolicyReader, runtime: RuntimeDep) -> dict[str, Any]:
    return _service(runtime).validate(draft_id)


@router.post("/drafts/{draft_id}/test", responses=_ERRORS)
def test(draft_id: int, _: PolicyReader, runtime: RuntimeDep) -> dict[str, Any]:
    return _service(runtime).test(draft_id)


@router.post("/drafts/{draft_id}/replay", responses=_ERRORS)
def replay(
    draft_id: int, principal: LegalEditor, runtime: RuntimeDep, body: ReplayBody | None = None
) -> dict[str, Any]:
    body = body or ReplayBody()
    return _service(runtime).replay(principal, draft_id, body.limit, body.since)


@router.post("/drafts/{draft_id}/submit", responses=_ERRORS)
def submit(draft_id: int, principal: LegalEditor, runtime: RuntimeDep) -> dict[str, Any]:
    return _service(runtime).submit(principal, draft_id)


@router.post("/drafts/{draft_id}/approve", responses=_ERRORS)
def approve(
    draft_id: int,
    principal: LegalApprover,
    runtime: RuntimeDep,
    body: ApproveBody | None = None,
) -> dict[str, Any]:
    effective = (body or ApproveBody()).effective_at
    if effective is not None and effective.tzinfo is None:
        raise GatewayError(
            422, "invalid_effective_at", "give a time zone (e.g. ...Z)", param="effective_at"
        )
    return _service(runtime).approve(principal, draft_id, effective)


@router.post("/drafts/{draft_id}/reject", responses=_ERRORS)
def reject(
    draft_id: int, body: RejectBody, principal: LegalApprover, runtime: RuntimeDep
) -> dict[str, Any]:
    return _service(runtime).reject(principal, draft_id, body.reason)
