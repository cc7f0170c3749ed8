"""The generator stage of a request: one job on the model's batcher, its images and their scores.

The job is data (batch key, prompts, per-image seeds, deadline); the model's owner thread merges
it with other requests' jobs, and the image classifier of this request's policy version scores
the whole batch in one call off the owner thread. ``record["batch"]`` names the batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from PIL import Image

from gateway.domain import ImageScores
from gateway.generation.batching import ImageJob, JobDropped, image_seeds
from gateway.generation.run import batch_key
from gateway.pipeline.request import GenerationRequest
from gateway.pipeline.stages import StageFailure, wait_for
from gateway.policy.active import Enforcement


@dataclass(frozen=True)
class Generated:
    images: list[Image.Image]
    scores: list[ImageScores]


def generate_and_score(
    enf: Enforcement,
    req: GenerationRequest,
    shape: tuple[int, int, int, int],
    timeouts: tuple[float, float],
    record: dict[str, Any],
) -> Generated:
    """Raises ``QueueFull`` (429) before anything runs, ``StageFailure`` when a stage fails."""
    width, height, steps, seed = shape
    timeout_s, stage_timeout_s = timeouts  # generation (queue included), image classifier
    loaded = enf.models.get(req.model)
    batcher = enf.models.batcher(req.model)
    job = ImageJob(
        key=batch_key(loaded, width, height, steps),
        prompt=req.prompt,
        negative_prompt=req.negative_prompt,
        seeds=image_seeds(seed, req.n),
        deadline=time.monotonic() + timeout_s,
        scorer=enf.image_classifier,
    )
    try:
        future = batcher.submit(job)  # QueueFull: the waiting bound counts images
    except JobDropped as exc:  # the model was retired by a newer policy version meanwhile
        raise StageFailure("generator", str(exc)) from exc
    try:
        out = wait_for("generator", future, timeout_s)
    finally:
        job.cancelled.set()  # if we gave up waiting, the batcher drops it before it runs
    record["batch"] = out.batch.to_json()
    timings = record["timings_ms"]
    timings["queue"] = out.batch.queue_wait_ms
    timings["generator"] = out.batch.generator_ms
    scored = wait_for("image_classifier", out.scored, stage_timeout_s)
    timings["image_classifier"] = scored.classifier_ms
    if scored.error is not None or scored.scores is None:
        raise StageFailure("image_classifier", scored.error or "returned no scores")
    if len(scored.scores) != len(out.images):
        raise StageFailure("image_classifier", "returned the wrong number of results")
    return Generated(out.images, scored.scores)
