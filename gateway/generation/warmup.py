"""Warm-up on the owner thread, and the optional compiled UNet (``options.compile``).

Without ``compile``, one small call (smallest declared size, one image) starts torch's thread
team on the owner thread before the first request. With ``compile``, the UNet is wrapped in
``torch.compile`` (``mode="reduce-overhead"``, CUDA graphs, on a GPU; the default mode on a
CPU) and every declared size is run at every batch size from 1 to ``max_batch``, so no request
pays for a compilation.
"""

from __future__ import annotations

import logging
import time

from gateway.generation.batching import ImageJob
from gateway.generation.loader import LoadedModel
from gateway.generation.run import batch_key, run_batch

log = logging.getLogger(__name__)

WARMUP_STEPS = 2


def compile_pipeline(model: LoadedModel) -> None:
    import torch

    pipeline = model.pipeline
    mode = "reduce-overhead" if torch.cuda.is_available() else "default"
    pipeline.unet = torch.compile(pipeline.unet, mode=mode, fullgraph=False)


def warm_up(model: LoadedModel, max_batch: int) -> float:
    """Run the warm-up calls; return the seconds it took."""
    t0 = time.monotonic()
    entry = model.entry
    sizes = [tuple(int(v) for v in s.split("x")) for s in entry.sizes]
    if entry.options.compile:
        compile_pipeline(model)
        batches = list(range(1, max_batch + 1))
    else:
        sizes = [min(sizes, key=lambda wh: wh[0] * wh[1])]
        batches = [1]
    steps = max(entry.steps.min, min(WARMUP_STEPS, entry.steps.max))
    for width, height in sizes:
        key = batch_key(model, width, height, steps)
        for size in batches:
            jobs = [ImageJob(key, "warm-up", None, (i,), 0) for i in range(size)]
            run_batch(model, key, jobs)
    seconds = time.monotonic() - t0
    log.info("model %s warmed up in %.1f s", model.model_id, seconds)
    return seconds
