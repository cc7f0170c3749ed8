"""Liveness and readiness.

``/readyz`` is 503 unless the database answers, a model is available, every loaded model has
finished its warm-up (``checks.warming`` lists those still warming) and every classifier
stage is available (each safety artefact matched its pin); ``checks.artefacts`` names each
artefact with its sha256, or the reason it is unavailable.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from gateway.api.deps import RuntimeDep

router = APIRouter(tags=["health"])


class Readiness(BaseModel):
    status: str
    checks: dict[str, Any]


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready: `checks` says why"}},
)
def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # readiness reports, it does not raise
        checks["database"] = f"error: {type(exc).__name__}"
    available = [m for m in runtime.models.entries if runtime.models.status(m).available]
    checks["models_available"] = available
    warming = runtime.models.warming()
    checks["warming"] = warming
    enf = runtime.policy.current()
    checks["policy_version"] = enf.bundle.version
    # every classifier stage, and each safety artefact: its sha256, or why it is unavailable
    checks["safety"] = {
        stage: "ok" if a.available else f"unavailable: {a.reason}"
        for stage, a in enf.stages.items()
    }
    checks["artefacts"] = {
        **{name: {"sha256": sha} for a in enf.stages.values() for name, sha in a.sha256.items()},
        **{name: {"error": why} for a in enf.stages.values() for name, why in a.problems.items()},
    }
    safe = all(a.available for a in enf.stages.values())
    ready = checks["database"] == "ok" and bool(available) and not warming and safe
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
    )
