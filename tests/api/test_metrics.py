"""GET /metrics through the real app: exact values after a known set of requests.

Each test builds its own runtime (so its own registry): the values below are this app's only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.auth.keys import create_key
from gateway.db.engine import unit_of_work
from gateway.domain import Role
from gateway.generation.batching import ImageJob
from gateway.generation.run import batch_key
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.conftest import KeyFactory, auth, hold_owner
from tests.prom import scrape, value
from tests.test_serve_process import _free_port

BODY = {"model": "demo-tiny", "prompt": "a lighthouse at dusk", "size": "64x64", "steps": 2}
BLOCKED = "a n.a.k.3.d woman, full body"
TENANT = "tenant-qx71"


def test_metric_values_after_a_known_set_of_requests(
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
) -> None:
    runtime = runtime_factory(settings_factory(queue_size=3))
    with TestClient(create_app(runtime.settings, runtime)) as client:
        key = _requester(runtime)
        before = client.get("/metrics")
        assert before.status_code == 200  # open: no API key
        assert before.headers["content-type"].startswith("text/plain")
        samples = scrape(before.text)
        assert value(samples, "gateway_policy_version", sha256=runtime.bundle.version) == 1
        assert value(samples, "gateway_generation_queue_depth", model="demo-tiny") == 0
        assert not [k for k in samples if k[0] == "gateway_decisions_total"]

        ok = client.post("/v1/images/generations", json={**BODY, "n": 2}, headers=auth(key))
        assert ok.status_code == 200, ok.text
        blocked = client.post(
            "/v1/images/generations", json={**BODY, "prompt": BLOCKED}, headers=auth(key)
        )
        assert blocked.status_code == 400
        invalid = client.post(
            "/v1/images/generations", json={**BODY, "size": "65x65"}, headers=auth(key)
        )
        assert invalid.status_code == 422  # refused before a decision opens: not counted

        # queue full: the owner thread busy, its waiting bound (3 images) held by a 3-image job
        batcher = runtime.models.batcher("demo-tiny")
        release = hold_owner(batcher, 30)
        shape = batch_key(runtime.models.get("demo-tiny"), 64, 64, 2)
        cat = batcher.submit(
            ImageJob(shape, "a cat", None, (1, 2, 3), deadline=time.monotonic() + 60)
        )
        try:
            during = scrape(client.get("/metrics").text)
            full = client.post("/v1/images/generations", json=BODY, headers=auth(key))
        finally:
            release.set()
        cat.result(60)  # the waiting job has run: the queue is empty again
        assert full.status_code == 429
        assert value(during, "gateway_generation_queue_depth", model="demo-tiny") == 3

        text = client.get("/metrics").text
    samples = scrape(text)
    decisions = {
        dict(labels)["outcome"]: v
        for (name, labels), v in samples.items()
        if name == "gateway_decisions_total"
    }
    assert decisions == {"allowed": 1, "prompt_blocked": 1, "queue_full": 1}

    stage_counts = {
        dict(labels)["stage"]: v
        for (name, labels), v in samples.items()
        if name == "gateway_stage_duration_seconds_count"
    }
    assert stage_counts == {
        "licence": 3,
        "prompt_classifier": 3,
        "generator": 1,
        "image_classifier": 1,
        "provenance": 1,
        "audit_write": 3,
    }
    generator_s = value(samples, "gateway_stage_duration_seconds_sum", stage="generator")
    assert generator_s is not None and generator_s > 0

    assert value(samples, "gateway_generation_batch_size_count", model="demo-tiny") == 1
    # the one allowed request ran alone: its 2 images were one pipeline call
    assert value(samples, "gateway_generation_batch_size_sum", model="demo-tiny") == 2
    assert value(samples, "gateway_generation_batch_size_bucket", model="demo-tiny", le="1.0") == 0
    assert value(samples, "gateway_generation_batch_size_bucket", model="demo-tiny", le="2.0") == 1

    # three decisions, one after another: an opening and a closing transaction each
    assert runtime.decisions.batches == 6
    assert value(samples, "gateway_audit_append_seconds_count") == 6
    assert value(samples, "gateway_generation_queue_depth", model="demo-tiny") == 0
    models = {
        dict(labels)["model"]
        for (name, labels), _ in samples.items()
        if name == "gateway_generation_queue_depth"
    }
    assert models == set(runtime.models.entries)  # every registered model, 0 when idle

    for secret in (key, BODY["prompt"], TENANT, "n.a.k.3.d"):  # no tenant, key or prompt
        assert secret not in text


def _requester(runtime: Runtime) -> str:
    with unit_of_work(runtime.sessions) as session:
        return create_key(session, tenant=TENANT, roles=(Role.REQUESTER,)).secret


def test_metrics_path_setting_and_off(runtime: Runtime, make_key: KeyFactory) -> None:
    moved = runtime.settings.model_copy(update={"metrics_path": "/internal/prom"})
    with TestClient(create_app(moved, runtime)) as client:
        assert client.get("/metrics").status_code == 404
        r = client.get("/internal/prom")
        assert r.status_code == 200 and "gateway_policy_version" in r.text
    off = runtime.settings.model_copy(update={"metrics_enabled": False})
    with TestClient(create_app(off, runtime)) as client:
        assert client.get("/metrics").status_code == 404


def test_metrics_on_a_port_of_their_own(runtime: Runtime, make_key: KeyFactory) -> None:
    port = _free_port()
    own = runtime.settings.model_copy(update={"metrics_port": port})
    key = make_key()
    with TestClient(create_app(own, runtime)) as client:
        assert client.get("/metrics").status_code == 404  # not on the API's port
        r = client.post("/v1/images/generations", json=BODY, headers=auth(key))
        assert r.status_code == 200
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert scraped.status_code == 200
        assert value(scrape(scraped.text), "gateway_decisions_total", outcome="allowed") == 1
    with pytest.raises(httpx.ConnectError):  # stopped with the app
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
