"""GET /v1/models: registered models with licence and availability."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api.deps import Requester, RuntimeDep
from gateway.api.responses import AUTHENTICATED, errors
from gateway.api.schemas import ModelCard, ModelList

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList, responses=errors(*AUTHENTICATED))
def list_models(_: Requester, runtime: RuntimeDep) -> ModelList:
    cards = []
    for model_id, entry in runtime.models.entries.items():
        status = runtime.models.status(model_id)
        cards.append(
            ModelCard(
                id=model_id,
                created=0,
                owned_by=model_id.split("/")[0] if "/" in model_id else "gateway",
                licence=entry.licence,
                available=status.available,
                unavailable_reason=status.reason,
                sizes=list(entry.sizes),
                steps=entry.steps.model_dump(),
                weights_sha256=status.weights_sha256,
            )
        )
    return ModelList(data=cards)
