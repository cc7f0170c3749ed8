"""One call of a diffusers pipeline for a batch of jobs: lists of prompts, one generator per image.

Image ``i`` of a job is drawn from ``torch.Generator("cpu").manual_seed(job.seeds[i])``, so its
initial latents are the same whether it runs alone or in a batch (diffusers draws each image's
latents from its own generator when given a list). Called only on the pipeline's owner thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from gateway.generation.adapters import activate_adapter
from gateway.generation.batching import BatchKey, ImageJob, image_seeds
from gateway.generation.loader import LoadedModel

DEFAULT_GUIDANCE = 7.5  # the Stable Diffusion pipelines' default; requests cannot set it yet


@dataclass(frozen=True)
class GenerationParams:
    prompt: str
    negative_prompt: str | None
    n: int
    width: int
    height: int
    steps: int
    seed: int


def batch_key(model: LoadedModel, width: int, height: int, steps: int) -> BatchKey:
    pipeline = model.pipeline
    scheduler = getattr(pipeline, "scheduler", None)
    return BatchKey(
        model=model.base.model_id if model.base is not None else model.model_id,
        width=width,
        height=height,
        steps=steps,
        guidance=DEFAULT_GUIDANCE,
        scheduler=type(scheduler).__name__ if scheduler is not None else "",
        dtype=str(getattr(pipeline, "dtype", "")).removeprefix("torch."),
        adapter=model.adapter,
    )


def run_batch(
    model: LoadedModel, key: BatchKey, jobs: Sequence[ImageJob]
) -> list[list[Image.Image]]:
    import torch

    activate_adapter(model.pipeline, key.adapter)  # the base alone when adapter is None
    prompts: list[str] = []
    negatives: list[str] = []
    generators: list[torch.Generator] = []
    for job in jobs:
        for seed in job.seeds:
            prompts.append(job.prompt)
            negatives.append(job.negative_prompt or "")
            generators.append(torch.Generator(device="cpu").manual_seed(seed))
    with torch.inference_mode():
        result = model.pipeline(
            prompt=prompts,
            negative_prompt=negatives if jobs[0].negative_prompt is not None else None,
            width=key.width,
            height=key.height,
            num_inference_steps=key.steps,
            guidance_scale=key.guidance,
            generator=generators,
            output_type="pil",
        )
    images = list(result.images)
    if len(images) != len(prompts):
        raise RuntimeError(f"pipeline returned {len(images)} images, expected {len(prompts)}")
    out: list[list[Image.Image]] = []
    start = 0
    for job in jobs:
        out.append(images[start : start + job.n])
        start += job.n
    return out


def run_pipeline(model: LoadedModel, params: GenerationParams) -> list[Image.Image]:
    """One request's images, run directly (tests, benchmarks): the same call a batch makes."""
    key = batch_key(model, params.width, params.height, params.steps)
    job = ImageJob(
        key, params.prompt, params.negative_prompt, image_seeds(params.seed, params.n), 0
    )
    return run_batch(model, key, [job])[0]
