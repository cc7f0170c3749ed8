"""Batching with the real demo-tiny pipeline, through the runtime and the FastAPI app."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import gateway.generation.models as models_module
from gateway.app import create_app
from gateway.auth.keys import create_key
from gateway.db.engine import unit_of_work
from gateway.domain import Role
from gateway.generation.batching import ImageJob, image_seeds
from gateway.generation.loader import LoadedModel
from gateway.generation.run import batch_key
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.conftest import auth, hold_owner

MODEL = "demo-tiny"


def _pixels(image: Image.Image) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.asarray(image, dtype=np.int16)


def _job(loaded: LoadedModel, prompt: str, seed: int, n: int = 1) -> ImageJob:
    key = batch_key(loaded, 64, 64, 3)
    return ImageJob(key, prompt, None, image_seeds(seed, n), time.monotonic() + 120)


def test_image_is_the_same_alone_and_inside_a_batch(runtime: Runtime) -> None:
    """Per-image generators: image i of (seed s) is image 0 of (seed s + i), batched or not.

    One generator per image makes the initial latents identical; with oneDNN off
    (``cpu_batch_invariant``, the default) the pixels are identical too. With oneDNN on, its
    convolutions round differently by batch size: a few pixels move by one level of 255.
    """
    batcher = runtime.models.batcher(MODEL)
    loaded = runtime.models.get(MODEL)
    assert batcher.ready.wait(120)

    release = hold_owner(batcher)
    batched = [
        batcher.submit(_job(loaded, "a lighthouse", 11, n=2)),
        batcher.submit(_job(loaded, "a red bicycle", 40)),
        batcher.submit(_job(loaded, "a lighthouse", 12)),
    ]
    release.set()
    outs = [f.result(120) for f in batched]
    assert len({o.batch.id for o in outs}) == 1 and outs[0].batch.size == 4

    alone = [batcher.submit(_job(loaded, "a lighthouse", 12)).result(120) for _ in range(2)]
    assert alone[0].batch.size == 1
    # alone, the same seed gives the same pixels exactly
    assert np.array_equal(_pixels(alone[0].images[0]), _pixels(alone[1].images[0]))
    # image 1 of seed 11 == image 0 of seed 12, in the batch and alone
    reference = _pixels(alone[0].images[0])
    for candidate in (outs[0].images[1], outs[2].images[0]):
        assert np.array_equal(_pixels(candidate), reference)
    # and different seeds/prompts really give different images
    assert np.abs(_pixels(outs[0].images[0]) - reference).max() > 8


def _keys(runtime: Runtime) -> tuple[str, str]:
    with unit_of_work(runtime.sessions) as session:
        requester = create_key(session, tenant="acme", roles=[Role.REQUESTER]).secret
        auditor = create_key(session, tenant="acme", roles=[Role.AUDITOR]).secret
    return requester, auditor


def test_concurrent_requests_share_a_batch_and_record_it(
    runtime_factory: Callable[..., Runtime], settings_factory: Callable[..., Settings]
) -> None:
    runtime = runtime_factory(settings_factory(batch_max_wait_ms=4000))
    requester, auditor = _keys(runtime)
    client = TestClient(create_app(runtime.settings, runtime))
    bodies = [
        {"model": MODEL, "prompt": p, "size": "64x64", "steps": 2, "seed": 5}
        for p in ("a lighthouse at dusk", "a bowl of oranges", "a snowy village")
    ]
    # the owner thread is held until all three have queued: a request that reached the batcher
    # while the others were still in HTTP would otherwise start alone (nobody in flight yet)
    batcher = runtime.models.batcher(MODEL)
    release = hold_owner(batcher, 120)
    with ThreadPoolExecutor(3) as pool:
        futures = [
            pool.submit(client.post, "/v1/images/generations", json=b, headers=auth(requester))
            for b in bodies
        ]
        deadline = time.monotonic() + 120
        while batcher.waiting_images() < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        release.set()
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200, 200, 200], [r.text for r in responses]
    records = [
        client.get(
            f"/v1/audit/decisions/{r.json()['governance']['decision_id']}",
            headers=auth(auditor),
        ).json()
        for r in responses
    ]
    batches = [rec["batch"] for rec in records]
    assert {b["size"] for b in batches} == {3}
    assert len({b["id"] for b in batches}) == 1
    for b in batches:
        assert b["generator_ms"] > 0 and b["queue_wait_ms"] >= 0
    timings = records[0]["timings_ms"]
    assert timings["generator"] == batches[0]["generator_ms"]


def test_readyz_waits_for_warm_up(
    runtime_factory: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real_warm_up = models_module.warm_up

    def gated(loaded: LoadedModel, max_batch: int) -> float:
        gate.wait(60)
        return real_warm_up(loaded, max_batch)

    monkeypatch.setattr(models_module, "warm_up", gated)
    runtime = runtime_factory(warm=False)
    client = TestClient(create_app(runtime.settings, runtime))
    try:
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["warming"] == [MODEL]
    finally:
        gate.set()
    assert runtime.models.batcher(MODEL).ready.wait(120)
    r = client.get("/readyz")
    assert r.status_code == 200, r.json()
    assert r.json()["checks"]["warming"] == []


def test_queue_depth_counts_waiting_images_per_model(runtime: Runtime) -> None:
    batcher = runtime.models.batcher(MODEL)
    loaded = runtime.models.get(MODEL)
    release = hold_owner(batcher)
    try:
        batcher.submit(_job(loaded, "a lighthouse", 1, n=3))
        assert runtime.models.waiting_images() == {MODEL: 3}
    finally:
        release.set()
