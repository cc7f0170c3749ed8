"""/v1/policies: versions, drafts, validation, tests, replay and four-eyes publishing.

Thin: every route calls ``PolicyService`` (``gateway/policy/workflow.py``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import LegalApprover, LegalEditor, PolicyReader, RuntimeDep
from gateway.api.responses import AUTHENTICATED, WITH_BODY, errors
from gateway.api.schemas import INTEGRAL, MAX_ROW_ID, NO_NUL, NOT_BLANK, Int, RowId, Timestamp
from gateway.errors import GatewayError
from gateway.policy.replay import MAX_LIMIT
from gateway.policy.workflow import FILE_PATH, MAX_FILE_BYTES, MAX_FILES, PolicyService

router = APIRouter(prefix="/v1/policies", tags=["policies"], responses=errors(*AUTHENTICATED))
_READ = errors(404, 422)
_WRITE = errors(*WITH_BODY, 404, 409)

Files = Annotated[
    dict[str, str | None],
    Field(
        max_length=MAX_FILES,
        json_schema_extra={
            "propertyNames": {"pattern": f"^{FILE_PATH}$"},
            "additionalProperties": {
                "anyOf": [
                    {"type": "string", "maxLength": MAX_FILE_BYTES, "pattern": NO_NUL},
                    {"type": "null"},
                ],
                "description": f"at most {MAX_FILE_BYTES} bytes of UTF-8",
            },
        },
    ),
]


class DraftBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_version: Annotated[int, Field(ge=1, le=MAX_ROW_ID, strict=True), INTEGRAL] | None = Field(
        default=None, description="default: the active one"
    )
    files: Files = Field(
        default_factory=dict, description="path -> content (overlays the base); null deletes"
    )
    note: str | None = Field(default=None, max_length=4000, pattern=NO_NUL)


class DraftUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: Files = Field(description="path -> content (overlays the draft); null deletes")
    note: str | None = Field(default=None, max_length=4000, pattern=NO_NUL)


class ReplayBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: Int = Field(default=1000, ge=1, le=MAX_LIMIT, strict=True)
    since: Timestamp | None = None


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    effective_at: Timestamp | None = Field(
        default=None, description="schedule the switch (with a time zone)"
    )


class RejectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=4000, pattern=NOT_BLANK)


def _service(runtime: RuntimeDep) -> PolicyService:
    return PolicyService(runtime)


@router.get("/active", responses=errors(404))
def active(_: PolicyReader, runtime: RuntimeDep) -> dict[str, Any]:
    return _service(runtime).active()


@router.get("/versions")
def versions(_: PolicyReader, runtime: RuntimeDep) -> dict[str, Any]:
    return {"data": _service(runtime).versions()}


@router.get("/versions/{version_id}", responses=_READ)
def version(version_id: RowId, _: PolicyReader, runtime: RuntimeDep) -> dict[str, Any]:
    return _service(runtime).version(version_id)


@router.get("/versions/{a}/diff/{b}", responses=_READ)
def diff(a: RowId, b: RowId, _: PolicyReader, runtime: RuntimeDep) -> dict[str, Any]:
    return _service(runtime).diff(a, b)


@router.post("/drafts", status_code=201, responses=errors(*WITH_BODY, 404))
def create_draft(body: DraftBody, principal: LegalEditor, runtime: RuntimeDep) -> dict[str, Any]:
    return _service(runtime).create_draft(principal, body.base_version, body.files, body.note)


@router.put("/drafts/{draft_id}", responses=_WRITE)
def update_draft(
    draft_id: RowId, body: DraftUpdate, principal: LegalEditor, runtime: RuntimeDep
) -> dict[str, Any]:
    return _service(runtime).update_draft(principal, draft_id, body.files, body.note)


@router.post("/drafts/{draft_id}/validate", responses=_READ)
def validate(draft_id: RowId, _: PolicyReader, runtime: RuntimeDep) -> dict[str, Any]:
    return _service(runtime).validate(draft_id)


@router.post("/drafts/{draft_id}/test", responses=_READ)
def test(draft_id: RowId, _: PolicyReader, runtime: RuntimeDep) -> dict[str, Any]:
    return _service(runtime).test(draft_id)


@router.post("/drafts/{draft_id}/replay", responses=_WRITE)
def replay(
    draft_id: RowId, principal: LegalEditor, runtime: RuntimeDep, body: ReplayBody | None = None
) -> dict[str, Any]:
    body = body or ReplayBody()
    return _service(runtime).replay(principal, draft_id, body.limit, body.since)


@router.post("/drafts/{draft_id}/submit", responses=errors(404, 409, 422, 503))
def submit(draft_id: RowId, principal: LegalEditor, runtime: RuntimeDep) -> dict[str, Any]:
    return _service(runtime).submit(principal, draft_id)


@router.post("/drafts/{draft_id}/approve", responses={**_WRITE, **errors(503)})
def approve(
    draft_id: RowId,
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


@router.post("/drafts/{draft_id}/reject", responses=_WRITE)
def reject(
    draft_id: RowId, body: RejectBody, principal: LegalApprover, runtime: RuntimeDep
) -> dict[str, Any]:
    return _service(runtime).reject(principal, draft_id, body.reason)
