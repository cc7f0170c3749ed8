"""One call of a diffusers pipeline: parameters in, PIL images out (reproducible by seed)."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from gateway.generation.adapters import activate_adapter
from gateway.generation.loader import LoadedModel


@dataclass(frozen=True)
class GenerationParams:
    prompt: str
    negative_prompt: str | None
    n: int
    width: int
    height: int
    steps: int
    seed: int


def run_pipeline(model: LoadedModel, params: GenerationParams) -> list[Image.Image]:
    import torch

    activate_adapter(model.pipeline, model.adapter)  # the base alone when adapter is None
    generator = torch.Generator(device="cpu").manual_seed(params.seed)
    with torch.inference_mode():
        result = model.pipeline(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            num_images_per_prompt=params.n,
            width=params.width,
            height=params.height,
            num_inference_steps=params.steps,
            generator=generator,
            output_type="pil",
        )
    images = list(result.images)
    if len(images) != params.n:
        raise RuntimeError(f"pipeline returned {len(images)} images, expected {params.n}")
    return images
