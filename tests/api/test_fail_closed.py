"""A failing or slow stage denies the request (503) and the denial is recorded."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image

from gateway.app import create_app
from gateway.auth.keys import create_key
from gateway.db.engine import unit_of_work
from gateway.domain import ImageScores, Role, TextScores
from gateway.generation.batching import ImageJob
from gateway.generation.run import batch_key
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.conftest import auth, hold_owner

BODY = {"model": "demo-tiny", "prompt": "a lighthouse at dusk", "size": "64x64", "steps": 2}


class BrokenPromptClassifier:
    def classify(self, texts: Sequence[str]) -> list[TextScores]:
        raise RuntimeError("classifier backend crashed")


class SlowImageClassifier:
    def classify(self, images: Sequence[Image.Image]) -> list[ImageScores]:
        time.sleep(2.0)
        raise AssertionError("never reached in time")


class ShortImageClassifier:
    def classify(self, images: Sequence[Image.Image]) -> list[ImageScores]:
        return []  # drops every image: must not mean "nothing to check"


def _client_and_keys(runtime: Runtime) -> tuple[TestClient, str, str]:
    with unit_of_work(runtime.sessions) as session:
        requester = create_key(session, tenant="acme", roles=[Role.REQUESTER]).secret
        auditor = create_key(session, tenant="acme", roles=[Role.AUDITOR]).secret
    return TestClient(create_app(runtime.settings, runtime)), requester, auditor


def _assert_denied_and_recorded(
    client: TestClient, requester: str, auditor: str, stage: str
) -> dict[str, Any]:
    r = client.post("/v1/images/generations", json=BODY, headers=auth(requester))
    assert r.status_code == 503, r.text
    body = r.json()
    assert "data" not in body
    err = body["error"]
    assert err["code"] == "safety_system_unavailable"
    record = client.get(f"/v1/audit/decisions/{err['decision_id']}", headers=auth(auditor)).json()
    assert record["status"] == "closed"
    assert record["outcome"] == "safety_system_unavailable"
    assert record["http_status"] == 503
    assert record["errors"][0]["stage"] == stage
    return record


def test_failing_prompt_classifier(runtime_factory: Callable[..., Runtime]) -> None:
    runtime = runtime_factory(prompt_classifier=BrokenPromptClassifier())
    client, requester, auditor = _client_and_keys(runtime)
    record = _assert_denied_and_recorded(client, requester, auditor, "prompt_classifier")
    assert "classifier backend crashed" in record["errors"][0]["message"]
    assert "generator" not in record["timings_ms"]


def test_image_classifier_over_its_deadline(
    runtime_factory: Callable[..., Runtime], settings_factory: Callable[..., Settings]
) -> None:
    runtime = runtime_factory(
        settings_factory(stage_timeout_s=0.5), image_classifier=SlowImageClassifier()
    )
    client, requester, auditor = _client_and_keys(runtime)
    record = _assert_denied_and_recorded(client, requester, auditor, "image_classifier")
    assert "within 0.5 s" in record["errors"][0]["message"]
    assert "images" not in record


def test_image_classifier_that_skips_images(runtime_factory: Callable[..., Runtime]) -> None:
    runtime = runtime_factory(image_classifier=ShortImageClassifier())
    client, requester, auditor = _client_and_keys(runtime)
    _assert_denied_and_recorded(client, requester, auditor, "image_classifier")


def test_failing_generator(runtime_factory: Callable[..., Runtime]) -> None:
    runtime = runtime_factory()
    loaded = runtime.models.get("demo-tiny")

    def explode(**_: Any) -> Any:
        raise RuntimeError("CUDA out of memory (simulated)")

    object.__setattr__(loaded, "pipeline", explode)
    client, requester, auditor = _client_and_keys(runtime)
    record = _assert_denied_and_recorded(client, requester, auditor, "generator")
    assert "out of memory" in record["errors"][0]["message"]


def test_full_queue_is_429_with_retry_after(
    runtime_factory: Callable[..., Runtime], settings_factory: Callable[..., Settings]
) -> None:
    runtime = runtime_factory(settings_factory(queue_size=1, retry_after_s=3))
    client, requester, auditor = _client_and_keys(runtime)
    # occupy the model's owner thread, then fill the single waiting image slot with a job
    batcher = runtime.models.batcher("demo-tiny")
    release = hold_owner(batcher, 30)
    loaded = runtime.models.get("demo-tiny")
    key = batch_key(loaded, 64, 64, 2)
    batcher.submit(ImageJob(key, "a cat", None, (1,), deadline=time.monotonic() + 60))
    try:
        r = client.post("/v1/images/generations", json=BODY, headers=auth(requester))
    finally:
        release.set()
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    err = r.json()["error"]
    assert err["code"] == "queue_full"
    record = client.get(f"/v1/audit/decisions/{err['decision_id']}", headers=auth(auditor)).json()
    assert record["outcome"] == "queue_full"
