"""One governed text-to-image request, start to finish.

validate → open decision (``received`` committed) → licence check → model availability →
prompt classifier → generator (batched, bounded queue) → image classifiers → per-image policy →
provenance → close decision (``decided``, same transaction as the outcome).

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
import time
from typing import Any

from gateway.audit.decisions import Opening
from gateway.audit.stuck import AuditUnavailable
from gateway.domain import Direction, LicenceDecision, Principal
from gateway.errors import GatewayError
from gateway.generation.batching import QueueFull
from gateway.observability.logs import decision_id_var
from gateway.pipeline.generator_stage import generate_and_score
from gateway.pipeline.quarantine import QuarantinedImage, QuarantineRefused
from gateway.pipeline.request import DeliveredImage, GenerationRequest, GenerationResult
from gateway.pipeline.stages import StageFailure, run_stage
from gateway.policy.active import Enforcement
from gateway.policy.bundle import PolicyBundle
from gateway.policy.content import judge_image, judge_text
from gateway.policy.evaluate import evaluate_model
from gateway.policy.schema import ModelEntry
from gateway.provenance import Provenance, encode_png, sha256_hex
from gateway.provenance.stamp import StampedImage
from gateway.provenance.watermark import new_payload
from gateway.runtime import Runtime

log = logging.getLogger("gateway.decisions")


class Denied(Exception):
    """Internal: the request ends here with this outcome and error."""

    def __init__(self, outcome: str, error: GatewayError) -> None:
        super().__init__(error.message)
        self.outcome = outcome
        self.error = error


class GenerationPipeline:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

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
    def generate(self, principal: Principal, req: GenerationRequest) -> GenerationResult:
        rt = self._rt
        enf = rt.policy.current()  # one policy version for the whole request
        bundle = enf.bundle
        entry, use = self._validate(bundle, principal, req)
        size = req.size or entry.sizes[0]
        width, height = (int(v) for v in size.split("x"))
        steps = req.steps or entry.steps.default
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        watermark = new_payload()  # reserved with the decision, so verify can look it up
        request_json = {
            **req.to_json(),
            "size": size,
            "steps": steps,
            "seed": seed,
            "intended_use": use,
        }
        decision_id = self._open(  # committed before any model runs
            Opening(
                tenant_id=principal.tenant_id,
                key_id=principal.key_id,
                instance_id=rt.settings.instance_id,
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

        record: dict[str, Any] = {
            "timings_ms": {},
            "errors": [],
            "seed": seed,
            "policy": {"version_id": enf.version_id, "sha256": bundle.version},
            "tenant_facts": dict(principal.tenant_facts),
            "provenance": {"watermark_payload": watermark},
        }
        timings: dict[str, float] = record["timings_ms"]
        try:
            result = self._run(
                enf,
                decision_id,
                principal,
                req,
                entry,
                use,
                (width, height, steps, seed),
                record,
                timings,
            )
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

    def _run(
        self,
        enf: Enforcement,
        decision_id: str,
        principal: Principal,
        req: GenerationRequest,
        entry: ModelEntry,
        use: str,
        shape: tuple[int, int, int, int],
        record: dict[str, Any],
        timings: dict[str, float],
    ) -> GenerationResult:
        rt = self._rt
        bundle = enf.bundle
        timeout = rt.settings.stage_timeout_s

        # 1. licence × intended use × tenant facts
        t0 = time.perf_counter()
        verdict = evaluate_model(bundle, req.model, use, principal.tenant_facts)
        timings["licence"] = _ms(t0)
        record["licence"] = _licence_json(verdict)
        record["rights"] = verdict.rights
        if not verdict.allowed:
            raise Denied(
                "licence_denied",
                GatewayError(
                    403,
                    "licence_policy_violation",
                    f"the licence terms of {req.model} do not permit intended use {use!r}: "
                    + verdict.reasons[0].message,
                    param="governance.intended_use",
                    extra={"reasons": [r.to_json() for r in verdict.reasons]},
                ),
            )

        # 2. is the model there and intact?
        status = enf.models.status(req.model)
        record["model"] = {
            "id": req.model,
            "licence": entry.licence,
            "weights_sha256": status.weights_sha256,
            "lineage": enf.models.lineage(req.model),  # adapter -> base, each pinned
        }
        if not status.available:
            raise Denied(
                "model_unavailable",
                GatewayError(
                    503,
                    "model_unavailable",
                    status.reason or f"{req.model} is unavailable",
                    param="model",
                ),
            )

        # 3. prompt classifier (prompt and negative prompt), then content policy
        _require_stages(enf)  # a stage whose artefacts failed their pins refuses up front
        texts = [req.prompt] + ([req.negative_prompt] if req.negative_prompt else [])
        t0 = time.perf_counter()
        scores = run_stage(
            rt.executor, "prompt_classifier", lambda: enf.prompt_classifier.classify(texts), timeout
        )
        timings["prompt_classifier"] = _ms(t0)
        _judged_by(record, enf, "prompt_classifier")
        if len(scores) != len(texts):
            raise StageFailure("prompt_classifier", "returned the wrong number of results")
        prompt_a = judge_text(bundle.content, scores[0], Direction.PROMPT)
        record["prompt"] = {
            "text": req.prompt,
            "normalised": scores[0].normalised,
            "assessment": prompt_a.to_json(),
        }
        blocked = list(prompt_a.details.get("blocked_categories", []))
        if req.negative_prompt:
            neg_a = judge_text(bundle.content, scores[1], Direction.NEGATIVE_PROMPT)
            record["negative_prompt"] = {
                "text": req.negative_prompt,
                "normalised": scores[1].normalised,
                "assessment": neg_a.to_json(),
            }
            blocked += [c for c in neg_a.details.get("blocked_categories", []) if c not in blocked]
        if blocked:
            raise Denied(
                "prompt_blocked",
                GatewayError(
                    400,
                    "content_policy_violation",
                    "the prompt was refused by the content policy: " + ", ".join(blocked),
                    param="prompt",
                    extra={"categories": blocked},
                ),
            )

        # 4. generator (batched with other requests), then 5. image classifiers on its batch
        try:
            generated = generate_and_score(
                enf,
                req,
                shape,
                (rt.settings.generation_timeout_s, rt.settings.stage_timeout_s),
                record,
            )
        except QueueFull:
            raise Denied(
                "queue_full",
                GatewayError(
                    429,
                    "queue_full",
                    "the generation queue is full; retry later",
                    headers={"Retry-After": str(rt.settings.retry_after_s)},
                ),
            ) from None
        images, image_scores = generated.images, generated.scores
        _judged_by(record, enf, "image_classifier")

        # 6. provenance (watermark, C2PA manifest, read back: fails closed) and delivery
        t0 = time.perf_counter()
        provenance = Provenance(
            decision_id,
            req.model,
            entry.licence,
            bundle.version,
            verdict.rights,
            status.weights_sha256,
            use,
            list(verdict.chain),
        )
        assessments = [judge_image(bundle.content, raw) for raw in image_scores]
        watermark = record["provenance"]["watermark_payload"]
        stamped: list[StampedImage | None] = run_stage(
            rt.executor,
            "provenance",
            lambda: [
                rt.provenance.stamp(image, provenance, req.output_format, i, watermark)
                if a.action == "allow"
                else None
                for i, (image, a) in enumerate(zip(images, assessments, strict=True))
            ],
            timeout,
        )
        delivered: list[DeliveredImage] = []
        for i, (image, assessment) in enumerate(zip(images, assessments, strict=True)):
            mark = stamped[i]
            png = mark.data if mark is not None else encode_png(image)
            categories = [
                *assessment.details.get("blocked_categories", []),
                *assessment.details.get("quarantined_categories", []),
            ]
            if assessment.action == "quarantine":
                self._quarantine(decision_id, i, png)
            delivered.append(
                DeliveredImage(
                    index=i,
                    action=assessment.action,
                    png=png if assessment.action == "allow" else None,
                    sha256=sha256_hex(png),
                    assessment=assessment.to_json(),
                    categories=categories,
                    mime=mark.mime if mark is not None else "image/png",
                )
            )
        timings["provenance"] = _ms(t0)
        record["images"] = [
            {"index": d.index, "action": d.action, "sha256": d.sha256, "assessment": d.assessment}
            | ({"provenance": m.to_record()} if m is not None else {})
            for d, m in zip(delivered, stamped, strict=True)
        ]
        n_ok = sum(d.action == "allow" for d in delivered)
        outcome = (
            "allowed"
            if n_ok == len(delivered)
            else "output_filtered"
            if n_ok == 0
            else "partially_filtered"
        )
        if outcome == "output_filtered":
            raise Denied(
                outcome,
                GatewayError(
                    400,
                    "output_filtered",
                    "every generated image was withheld by the image safety policy",
                    extra={"categories": sorted({c for d in delivered for c in d.categories})},
                ),
            )
        governance = {
            "decision_id": decision_id,
            "decision": outcome,
            "policy_version": bundle.version,
            "intended_use": use,
            "seed": shape[3],
            "model": record["model"],
            "licence": record["licence"],
            "prompt_assessment": prompt_a.to_json(),
            "negative_prompt_assessment": record.get("negative_prompt", {}).get("assessment"),
            "images": record["images"],
            "rights": verdict.rights,
            "classifiers": record["classifiers"],
        }
        return GenerationResult(decision_id, outcome, delivered, governance)

    def _quarantine(self, decision_id: str, index: int, png: bytes) -> None:
        try:  # kept where every replica can reveal it; not kept: the request is refused
            self._rt.quarantine.put(QuarantinedImage(decision_id, index, "image/png", png))
        except QuarantineRefused as exc:
            raise StageFailure("quarantine", str(exc)) from exc

    def _open(self, opening: Opening) -> str:
        try:
            return self._rt.decisions.open(opening)
        except AuditUnavailable as exc:
            raise self._audit_unavailable(exc, None) from exc

    def _close(
        self, decision_id: str, outcome: str, status: int, code: str | None, record: dict[str, Any]
    ) -> None:
        # committed (with the outcome) before the response is returned
        try:
            self._rt.decisions.close(
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
            headers={"Retry-After": str(self._rt.settings.retry_after_s)},
        )


def _require_stages(enf: Enforcement) -> None:
    for stage, artefacts in enf.stages.items():
        if not artefacts.available:
            raise StageFailure(stage, f"unavailable: {artefacts.reason}")


def _judged_by(record: dict[str, Any], enf: Enforcement, stage: str) -> None:
    """``record["classifiers"]``: sha256 of every artefact of the stages that judged it."""
    artefacts = enf.stages.get(stage)
    record.setdefault("classifiers", {}).update(artefacts.sha256 if artefacts else {})


def _licence_json(verdict: LicenceDecision) -> dict[str, Any]:
    out = verdict.to_json()
    out.pop("rights")
    out["id"] = out.pop("licence")
    return out


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)
