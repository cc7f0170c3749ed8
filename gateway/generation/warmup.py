"""Warm-up on the owner thread, and the optional compiled UNet (``options.compile``).

Without ``compile``, one small call (smallest declared size, one image) starts torch's thread
team on the owner thread before the first request. With ``compile``, the UNet is compiled in
place with ``torch.compile`` (``mode="reduce-overhead"``, CUDA graphs, on a GPU; the default
mode on a CPU) and every declared size is run at every batch size from 1 to ``max_batch``, so
no request pays for a compilation.
"""

from __future__ import annotations

import logging
import time

from gateway.generation.batching import ImageJob
from gateway.generation.loader import LoadedModel
from gateway.generation.run import batch_key, run_batch
from gateway.policy.schema import ModelEntry

log = logging.getLogger(__name__)

WARMUP_STEPS = 2


def compile_pipeline(model: LoadedModel) -> None:
    import torch

    pipeline = model.pipeline
    mode = "reduce-overhead" if torch.cuda.is_available() else "default"
    # in place (``Module.compile``): the UNet stays the diffusers model it was, so the LoRA
    # calls that look for diffusers models (``set_adapters``, ``disable_lora``) still find it
    pipeline.unet.compile(mode=mode, fullgraph=False)


def warmup_plan(entry: ModelEntry, max_batch: int) -> list[tuple[int, int, int]]:
    """(width, height, images) of each warm-up call."""
    sizes = [(int(w), int(h)) for w, _, h in (s.partition("x") for s in entry.sizes)]
    if not entry.options.compile:
        width, height = min(sizes, key=lambda wh: wh[0] * wh[1])
        return [(width, height, 1)]
    return [(w, h, b) for w, h in sizes for b in range(1, max_batch + 1)]


def warm_up(model: LoadedModel, max_batch: int) -> float:
    """Run the warm-up calls; return the seconds it took."""
    t0 = time.monotonic()
    entry = model.entry
    if entry.options.compile:
        compile_pipeline(model)
    steps = max(entry.steps.min, min(WARMUP_STEPS, entry.steps.max))
    for width, height, images in warmup_plan(entry, max_batch):
        key = batch_key(model, width, height, steps)
        jobs = [ImageJob(key, "warm-up", None, (i,), 0) for i in range(images)]
        run_batch(model, key, jobs)
    seconds = time.monotonic() - t0
    log.info("model %s warmed up in %.1f s", model.model_id, seconds)
    return seconds
