"""Fine-tuning jobs (OpenAI's /v1/fine_tuning/jobs shape where it fits): admin or
model_manager. A succeeded job has opened a policy draft; the adapter serves only after legal
submits it and a second person approves it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import RuntimeDep, require
from gateway.api.responses import AUTHENTICATED, WITH_BODY, errors
from gateway.domain import Principal, Role
from gateway.finetune.service import FineTuningService
from gateway.finetune.train import TrainConfig

router = APIRouter(tags=["fine-tuning"], responses=errors(*AUTHENTICATED))
ModelManager = Annotated[Principal, Depends(require(Role.MODEL_MANAGER))]


class Hyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_steps: int = Field(default=100, ge=1, le=100_000)
    rank: int = Field(default=4, ge=1, le=256)
    resolution: int | None = Field(default=None, ge=8, le=2048, multiple_of=8)
    learning_rate: float = Field(default=1e-4, gt=0.0, le=1.0)
    batch_size: int = Field(default=1, ge=1, le=64)


class Governance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rights: Literal["owned", "licensed", "public_domain", "unknown"]
    rights_note: str | None = Field(default=None, max_length=2000)
    intended_use: (
        Literal[
            "research", "internal_business", "commercial", "hosted_service", "train_other_model"
        ]
        | None
    ) = None


class CreateJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200, description="registered base model id")
    training_file: str = Field(
        min_length=1, max_length=100, description="a folder under <data dir>/fine_tuning/images"
    )
    suffix: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._/\-]*$",
        description="the new adapter's model id",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    governance: Governance


def get_service(request: Request, runtime: RuntimeDep) -> FineTuningService:
    service: FineTuningService | None = getattr(request.app.state, "fine_tuning", None)
    if service is None:
        service = FineTuningService(runtime)
        request.app.state.fine_tuning = service
    return service


Service = Annotated[FineTuningService, Depends(get_service)]


@router.post("/v1/fine_tuning/jobs", responses=errors(*WITH_BODY))
def create_job(body: CreateJob, principal: ModelManager, service: Service) -> dict[str, Any]:
    """Queue a fine-tune; the licence gate runs first (a refusal fails the job, naming the
    clause). Poll GET /v1/fine_tuning/jobs/{id}."""
    h = body.hyperparameters
    config = TrainConfig(
        steps=h.n_steps,
        rank=h.rank,
        resolution=h.resolution or 512,
        learning_rate=h.learning_rate,
        batch_size=h.batch_size,
        seed=body.seed,
    )
    return service.create(
        principal,
        model=body.model,
        training_file=body.training_file,
        suffix=body.suffix,
        rights=body.governance.rights,
        rights_note=body.governance.rights_note,
        intended_use=body.governance.intended_use,
        config=config,
        resolution_given=h.resolution is not None,
    )


@router.get("/v1/fine_tuning/jobs/{job_id}", responses=errors(404))
def get_job(job_id: str, principal: ModelManager, service: Service) -> dict[str, Any]:
    """Status (validating_files, queued, running, succeeded, failed, cancelled), progress,
    and once succeeded the draft id and the adapter's sha256."""
    return service.get(principal, job_id)


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel", responses=errors(404, 409))
def cancel_job(job_id: str, principal: ModelManager, service: Service) -> dict[str, Any]:
    """Stop at the next step (a checkpoint is kept; submitting again resumes)."""
    return service.cancel(principal, job_id)
