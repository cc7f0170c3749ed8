"""Steps 1 and 2: the licence check (licence × intended use × tenant facts), then whether the
model is loaded and matches its pins. Both run before any model does."""

from __future__ import annotations

import time
from typing import Any

from gateway.domain import LicenceDecision
from gateway.errors import GatewayError
from gateway.generation.models import ModelStatus
from gateway.pipeline.context import Denied, RequestContext, ms_since
from gateway.policy.evaluate import evaluate_model


def check_licence(ctx: RequestContext) -> LicenceDecision:
    """``record["licence"]`` and ``record["rights"]``; :class:`Denied` (403) when the licence
    does not permit the intended use, naming the first clause that refuses it."""
    req = ctx.req
    t0 = time.perf_counter()
    verdict = evaluate_model(ctx.bundle, req.model, ctx.use, ctx.principal.tenant_facts)
    ctx.timings["licence"] = ms_since(t0)
    ctx.record["licence"] = licence_json(verdict)
    ctx.record["rights"] = verdict.rights
    if not verdict.allowed:
        raise Denied(
            "licence_denied",
            GatewayError(
                403,
                "licence_policy_violation",
                f"the licence terms of {req.model} do not permit intended use {ctx.use!r}: "
                + verdict.reasons[0].message,
                param="governance.intended_use",
                extra={"reasons": [r.to_json() for r in verdict.reasons]},
            ),
        )
    return verdict


def check_model(ctx: RequestContext) -> ModelStatus:
    """``record["model"]`` (with its pinned lineage); :class:`Denied` (503) when the model is
    not there or not intact."""
    model = ctx.req.model
    status = ctx.enf.models.status(model)
    ctx.record["model"] = {
        "id": model,
        "licence": ctx.entry.licence,
        "weights_sha256": status.weights_sha256,
        "lineage": ctx.enf.models.lineage(model),  # adapter -> base, each pinned
    }
    if not status.available:
        raise Denied(
            "model_unavailable",
            GatewayError(
                503, "model_unavailable", status.reason or f"{model} is unavailable", param="model"
            ),
        )
    return status


def licence_json(verdict: LicenceDecision) -> dict[str, Any]:
    out = verdict.to_json()
    out.pop("rights")
    out["id"] = out.pop("licence")
    return out
