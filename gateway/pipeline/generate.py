"""One governed text-to-image request, start to finish.

validate → open decision (``received`` committed) → licence check → model availability →
prompt classifier → generator (batched, bounded queue) → image classifiers → per-image policy →
provenance → close decision (``decided``, same transaction as the outcome). Each step is a
small function over the request's :class:`~gateway.pipeline.context.RequestContext`, in its
own module: ``licence_step``, ``prompt_step``, ``generator_stage``, ``delivery``.

Every stage that raises or overruns denies the request (503 ``safety_system_unavailable``)
and the denial is recorded. Nothing leaves unless both classifiers and the policy said yes.

Nothing leaves either unless its decision is committed closed: when the database does not
take the opening or closing write within the writer's retry window, the request is answered
503 ``audit_unavailable`` (with ``Retry-After``) and no image; a decision left open that way
is closed as ``failed`` by the replica's reconciler (:mod:`gateway.audit.reconcile`). An
unexpected error in a stage closes the decision as ``failed`` before it is answered 500.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.audit.decisions import Opening, Outcome
from gateway.audit.stuck import AuditUnavailable
from gateway.domain import Principal
from gateway.errors import GatewayError
from gateway.observability.logs import decision_id_var
from gateway.pipeline.cancellation import Cancellation
from gateway.pipeline.context import Denied, RequestContext, Shape
from gateway.pipeline.delivery import Delivery, Verdicts, deliver
from gateway.pipeline.generator_stage import GeneratorLimits, generate_and_score
from gateway.pipeline.licence_step import check_licence, check_model
from gateway.pipeline.prompt_step import screen_prompts
from gateway.pipeline.request import GenerationRequest, GenerationResult
from gateway.pipeline.stages import StageFailure
from gateway.policy.active import Enforcement
from gateway.policy.bundle import PolicyBundle
from gateway.policy.schema import ModelEntry
from gateway.provenance.watermark import new_payload
from gateway.runtime import Runtime
from gateway.settings import Settings

log = logging.getLogger("gateway.decisions")


class PolicySource(Protocol):
    def current(self) -> Enforcement: ...


class DecisionSink(Protocol):
    """Opens and closes decision records, each committed before it returns
    (:class:`gateway.audit.writer.DecisionWriter`)."""

    def open(self, opening: Opening) -> str: ...

    def close(
        self,
        decision_id: str,
        *,
        outcome: str,
        http_status: int,
        error_code: str | None,
        record: dict[str, Any],
    ) -> None: ...


@dataclass(frozen=True)
class PipelineSettings:
    instance_id: str
    stage_timeout_s: float  # each classifier stage and provenance
    generation_timeout_s: float  # the generator, queue included
    retry_after_s: int  # Retry-After on 429 and on 503 audit_unavailable

    @classmethod
    def of(cls, settings: Settings) -> PipelineSettings:
        return cls(
            settings.instance_id,
            settings.stage_timeout_s,
            settings.generation_timeout_s,
            settings.retry_after_s,
        )


class GenerationPipeline:
    """Takes what the flow needs (a policy source, a decision sink, the provenance stamper and
    quarantine store, an executor for stage deadlines, four settings), not the whole runtime."""

    def __init__(
        self,
        policy: PolicySource,
        decisions: DecisionSink,
        delivery: Delivery,
        settings: PipelineSettings,
    ) -> None:
        self._policy = policy
        self._decisions = decisions
        self._delivery = delivery
        self._settings = settings

    @classmethod
    def of(cls, runtime: Runtime) -> GenerationPipeline:
        settings = PipelineSettings.of(runtime.settings)
        delivery = Delivery(
            runtime.provenance, runtime.quarantine, runtime.executor, settings.stage_timeout_s
        )
        return cls(runtime.policy, runtime.decisions, delivery, settings)

    # -- validation before anything is recorded -------------------------------------------
    def _validate(
        self, bundle: PolicyBundle, principal: Principal, req: GenerationRequest
    ) -> tuple[ModelEntry, str]:
        entry = bundle.models.models.get(req.model)
        if entry is None:
            raise GatewayError(
                404, "model_not_found", f"model {req.model!r} is not registered", param="model"
            )
        size = req.size or entry.sizes[0]
        if size not in entry.sizes:
            raise GatewayError(
                422,
                "invalid_size",
                f"size {size!r} is not allowed for {req.model}; allowed: " + ", ".join(entry.sizes),
                param="size",
            )
        if req.steps is not None and not entry.steps.min <= req.steps <= entry.steps.max:
            raise GatewayError(
                422,
                "invalid_steps",
                f"steps must be between {entry.steps.min} and {entry.steps.max} for {req.model}",
                param="steps",
            )
        use = req.intended_use or principal.default_intended_use or bundle.uses.default
        if principal.allowed_uses is not None and use not in principal.allowed_uses:
            raise GatewayError(
                403,
                "intended_use_not_permitted",
                f"this API key may not declare intended use {use!r}; allowed: "
                + ", ".join(principal.allowed_uses),
                param="governance.intended_use",
            )
        return entry, use

    # -- the flow -------------------------------------------------------------------------
    def generate(
        self,
        principal: Principal,
        req: GenerationRequest,
        cancellation: Cancellation | None = None,
    ) -> GenerationResult:
        """``cancellation``: set by the HTTP route when the client disconnects."""
        enf = self._policy.current()  # one policy version for the whole request
        bundle = enf.bundle
        entry, use = self._validate(bundle, principal, req)
        size = req.size or entry.sizes[0]
        width, height = (int(v) for v in size.split("x"))
        shape = Shape(
            width,
            height,
            req.steps or entry.steps.default,
            req.seed if req.seed is not None else secrets.randbelow(2**31),
        )
        watermark = new_payload()  # reserved with the decision, so verify can look it up
        request_json = {
            **req.to_json(),
            "size": size,
            "steps": shape.steps,
            "seed": shape.seed,
            "intended_use": use,
        }
        decision_id = self._open(  # committed before any model runs
            Opening(
                tenant_id=principal.tenant_id,
                key_id=principal.key_id,
                instance_id=self._settings.instance_id,
                user=req.user,
                model_id=req.model,
                licence_id=entry.licence,
                intended_use=use,
                policy_version=bundle.version,
                request=request_json,
                watermark=watermark,
            )
        )
        decision_id_var.set(decision_id)  # this request's log lines name its decision
        ctx = RequestContext(
            enf,
            principal,
            req,
            entry,
            use,
            shape,
            decision_id,
            cancellation or Cancellation(),
            record={
                "timings_ms": {},
                "errors": [],
                "seed": shape.seed,
                "policy": {"version_id": enf.version_id, "sha256": bundle.version},
                "tenant_facts": dict(principal.tenant_facts),
                "provenance": {"watermark_payload": watermark},
            },
        )
        record = ctx.record
        try:
            result = self._steps(ctx)
        except Denied as denied:
            denied.error.decision_id = decision_id
            self._close(decision_id, denied.outcome, denied.error.status, denied.error.code, record)
            raise denied.error from None
        except StageFailure as failure:
            record["errors"].append({"stage": failure.stage, "message": failure.message})
            self._close(
                decision_id, "safety_system_unavailable", 503, "safety_system_unavailable", record
            )
            raise GatewayError(
                503,
                "safety_system_unavailable",
                f"the {failure.stage} stage failed, so the request was refused (fail closed)",
                decision_id=decision_id,
            ) from failure
        except Exception as exc:  # a bug: recorded, then answered 500 (never an image)
            record["errors"].append({"stage": "pipeline", "message": type(exc).__name__})
            self._close(decision_id, "failed", 500, "internal_error", record)
            raise
        self._close(decision_id, result.outcome, 200, None, record)
        return result

    def _steps(self, ctx: RequestContext) -> GenerationResult:
        """The governed steps, in order; each adds its part to ``ctx.record``."""
        settings, delivery = self._settings, self._delivery
        licence = check_licence(ctx)  # 1. licence × intended use × tenant facts
        model = check_model(ctx)  # 2. the model is loaded and matches its pins
        # in flight for the model's batcher from here on: a lone request does not wait for company
        with ctx.enf.models.batcher(ctx.req.model).request():
            prompt = screen_prompts(ctx, delivery.executor, settings.stage_timeout_s)  # 3.
            generated = generate_and_score(  # 4. generator (batched), 5. image classifiers
                ctx,
                GeneratorLimits(
                    settings.generation_timeout_s, settings.stage_timeout_s, settings.retry_after_s
                ),
            )
            # 6. image policy, provenance, quarantine, outcome
            return deliver(ctx, generated, Verdicts(licence, model, prompt), delivery)

    def _open(self, opening: Opening) -> str:
        try:
            return self._decisions.open(opening)
        except AuditUnavailable as exc:
            raise self._audit_unavailable(exc, None) from exc

    def _close(
        self,
        decision_id: str,
        outcome: Outcome,
        status: int,
        code: str | None,
        record: dict[str, Any],
    ) -> None:
        # committed (with the outcome) before the response is returned
        try:
            self._decisions.close(
                decision_id, outcome=outcome, http_status=status, error_code=code, record=record
            )
        except AuditUnavailable as exc:  # left open; the reconciler closes it as failed
            raise self._audit_unavailable(exc, decision_id) from exc
        # one line per decision, carrying its id and the request's (never the prompt)
        log.info("decision closed: %s", outcome, extra={"fields": {"outcome": outcome}})

    def _audit_unavailable(self, exc: AuditUnavailable, decision_id: str | None) -> GatewayError:
        return GatewayError(
            503,
            "audit_unavailable",
            "the decision could not be recorded (the audit database is unavailable), so "
            "nothing was delivered; retry later",
            decision_id=decision_id,
            headers={"Retry-After": str(self._settings.retry_after_s)},
        )
