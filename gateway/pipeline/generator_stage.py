"""Steps 4 and 5: one job on the model's batcher, its images, and their image-classifier scores.

The job is data (batch key, prompts, per-image seeds, deadline); the model's owner thread merges
it with other requests' jobs, and the image classifier of this request's policy version scores
the whole batch in one call off the owner thread. ``record["batch"]`` names the batch. A client
that disconnects while its job waits takes the job off the queue (:mod:`.cancellation`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from PIL import Image

from gateway.domain import ImageScores
from gateway.errors import GatewayError
from gateway.generation.batching import ImageJob, JobDropped, QueueFull, image_seeds
from gateway.generation.run import batch_key
from gateway.pipeline.context import Denied, RequestContext
from gateway.pipeline.stages import StageFailure, wait_for

CLIENT_CLOSED_REQUEST = 499  # recorded only: the client is gone (nginx's convention)


@dataclass(frozen=True)
class Generated:
    images: list[Image.Image]
    scores: list[ImageScores]


@dataclass(frozen=True)
class GeneratorLimits:
    generation_timeout_s: float  # queue included
    classifier_timeout_s: float  # the image classifier, once the batch is generated
    retry_after_s: int  # the Retry-After of a 429


def generate_and_score(ctx: RequestContext, limits: GeneratorLimits) -> Generated:
    """:class:`Denied` ``queue_full`` (429) or ``cancelled`` (the client went away before the
    job ran: recorded 499) before anything is generated; ``StageFailure`` when a stage fails."""
    try:
        return _generate_and_score(ctx, limits)
    except QueueFull:  # the waiting bound counts images
        raise Denied(
            "queue_full",
            GatewayError(
                429,
                "queue_full",
                "the generation queue is full; retry later",
                headers={"Retry-After": str(limits.retry_after_s)},
            ),
        ) from None


def _generate_and_score(ctx: RequestContext, limits: GeneratorLimits) -> Generated:
    req, shape, cancellation = ctx.req, ctx.shape, ctx.cancellation
    loaded = ctx.enf.models.get(req.model)
    batcher = ctx.enf.models.batcher(req.model)
    job = ImageJob(
        key=batch_key(loaded, shape.width, shape.height, shape.steps),
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        seeds=image_seeds(shape.seed, req.n),
        deadline=time.monotonic() + limits.generation_timeout_s,
        scorer=ctx.enf.image_classifier,
        tracked=True,  # GenerationPipeline counts the request (Batcher.request)
    )
    if cancellation.reason is not None:  # the client left before its job was queued
        raise _cancelled(cancellation.reason)
    try:
        future = batcher.submit(job)
    except JobDropped as exc:  # the model was retired by a newer policy version meanwhile
        raise StageFailure("generator", str(exc)) from exc
    unregister = cancellation.on_cancel(lambda reason: batcher.cancel(job, reason))
    try:
        out = wait_for("generator", future, limits.generation_timeout_s)
    except StageFailure:
        reason = cancellation.reason
        dropped = (
            future.done() and not future.cancelled() and isinstance(future.exception(), JobDropped)
        )
        if reason is not None and dropped:
            raise _cancelled(reason) from None  # dropped before it ran: not a stage failure
        raise
    finally:
        unregister()
        batcher.cancel(job, "the request stopped waiting")  # a no-op once it has run
    ctx.record["batch"] = out.batch.to_json()
    ctx.timings["queue"] = out.batch.queue_wait_ms
    ctx.timings["generator"] = out.batch.generator_ms
    scored = wait_for("image_classifier", out.scored, limits.classifier_timeout_s)
    ctx.timings["image_classifier"] = scored.classifier_ms
    if scored.error is not None or scored.scores is None:
        raise StageFailure("image_classifier", scored.error or "returned no scores")
    if len(scored.scores) != len(out.images):
        raise StageFailure("image_classifier", "returned the wrong number of results")
    ctx.judged_by("image_classifier")
    return Generated(out.images, scored.scores)


def _cancelled(reason: str) -> Denied:
    return Denied(
        "cancelled",
        GatewayError(
            CLIENT_CLOSED_REQUEST,
            "client_disconnected",
            f"the request was cancelled before its images were generated: {reason}",
        ),
    )
