"""Step 6: the image policy on each image, provenance on those allowed, quarantine, and the
request's outcome.

Every allowed image is stamped (watermark, C2PA manifest, read back: any failure is a
``StageFailure``, so nothing leaves unstamped); a quarantined image is kept where every replica
can reveal it, or the request is refused. ``record["images"]`` lists every image, delivered or
not, with its assessment and sha256.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from gateway.audit.decisions import Outcome
from gateway.domain import Assessment, LicenceDecision
from gateway.errors import GatewayError
from gateway.generation.models import ModelStatus
from gateway.pipeline.context import Denied, RequestContext, ms_since
from gateway.pipeline.generator_stage import Generated
from gateway.pipeline.quarantine import QuarantinedImage, QuarantineRefused, QuarantineStore
from gateway.pipeline.request import DeliveredImage, GenerationResult
from gateway.pipeline.stages import StageFailure, run_stage
from gateway.policy.content import judge_image
from gateway.provenance import Provenance, encode_png, sha256_hex
from gateway.provenance.stamp import StampedImage


class Stamper(Protocol):
    def stamp(
        self, image: Image.Image, provenance: Provenance, fmt: str, index: int, payload: str
    ) -> StampedImage: ...


@dataclass(frozen=True)
class Delivery:
    """What this step needs from the runtime, and nothing more."""

    stamper: Stamper
    quarantine: QuarantineStore
    executor: ThreadPoolExecutor
    timeout_s: float  # the provenance stage's deadline


@dataclass(frozen=True)
class Verdicts:
    """What the earlier steps settled, as the response's governance block reports it."""

    licence: LicenceDecision
    model: ModelStatus
    prompt: Assessment


def deliver(
    ctx: RequestContext, generated: Generated, verdicts: Verdicts, via: Delivery
) -> GenerationResult:
    """The result to answer with; :class:`Denied` ``output_filtered`` when no image is left."""
    req, record = ctx.req, ctx.record
    t0 = time.perf_counter()
    provenance = Provenance(
        ctx.decision_id,
        req.model,
        ctx.entry.licence,
        ctx.bundle.version,
        verdicts.licence.rights,
        verdicts.model.weights_sha256,
        ctx.use,
        list(verdicts.licence.chain),
    )
    images = generated.images
    assessments = [judge_image(ctx.bundle.content, raw) for raw in generated.scores]
    watermark = record["provenance"]["watermark_payload"]
    stamped: list[StampedImage | None] = run_stage(
        via.executor,
        "provenance",
        lambda: [
            via.stamper.stamp(image, provenance, req.output_format, i, watermark)
            if a.action == "allow"
            else None
            for i, (image, a) in enumerate(zip(images, assessments, strict=True))
        ],
        via.timeout_s,
    )
    delivered = [
        _delivered(ctx.decision_id, i, image, assessment, mark, via.quarantine)
        for i, (image, assessment, mark) in enumerate(
            zip(images, assessments, stamped, strict=True)
        )
    ]
    ctx.timings["provenance"] = ms_since(t0)
    record["images"] = [
        {"index": d.index, "action": d.action, "sha256": d.sha256, "assessment": d.assessment}
        | ({"provenance": m.to_record()} if m is not None else {})
        for d, m in zip(delivered, stamped, strict=True)
    ]
    outcome = _outcome(delivered)
    return GenerationResult(
        ctx.decision_id, outcome, delivered, _governance(ctx, outcome, verdicts)
    )


def _delivered(
    decision_id: str,
    index: int,
    image: Image.Image,
    assessment: Assessment,
    mark: StampedImage | None,
    quarantine: QuarantineStore,
) -> DeliveredImage:
    png = mark.data if mark is not None else encode_png(image)
    categories = [
        *assessment.details.get("blocked_categories", []),
        *assessment.details.get("quarantined_categories", []),
    ]
    if assessment.action == "quarantine":
        try:  # kept where every replica can reveal it; not kept: the request is refused
            quarantine.put(QuarantinedImage(decision_id, index, "image/png", png))
        except QuarantineRefused as exc:
            raise StageFailure("quarantine", str(exc)) from exc
    return DeliveredImage(
        index=index,
        action=assessment.action,
        png=png if assessment.action == "allow" else None,
        sha256=sha256_hex(png),
        assessment=assessment.to_json(),
        categories=categories,
        mime=mark.mime if mark is not None else "image/png",
    )


def _outcome(delivered: list[DeliveredImage]) -> Outcome:
    n_ok = sum(d.action == "allow" for d in delivered)
    if n_ok == len(delivered):
        return "allowed"
    if n_ok:
        return "partially_filtered"
    raise Denied(
        "output_filtered",
        GatewayError(
            400,
            "output_filtered",
            "every generated image was withheld by the image safety policy",
            extra={"categories": sorted({c for d in delivered for c in d.categories})},
        ),
    )


def _governance(ctx: RequestContext, outcome: Outcome, verdicts: Verdicts) -> dict[str, Any]:
    record = ctx.record
    return {
        "decision_id": ctx.decision_id,
        "decision": outcome,
        "policy_version": ctx.bundle.version,
        "intended_use": ctx.use,
        "seed": ctx.shape.seed,
        "model": record["model"],
        "licence": record["licence"],
        "prompt_assessment": verdicts.prompt.to_json(),
        "negative_prompt_assessment": record.get("negative_prompt", {}).get("assessment"),
        "images": record["images"],
        "rights": verdicts.licence.rights,
        "classifiers": record["classifiers"],
    }
