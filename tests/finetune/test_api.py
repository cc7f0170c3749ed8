"""/v1/fine_tuning/jobs: roles, a refused job, a cancelled job, and one that opens a draft."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

from gateway.domain import Role
from gateway.runtime import Runtime
from tests.conftest import KeyFactory, auth
from tests.finetune.helpers import make_images


def _wait(client: TestClient, key: str, job_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/fine_tuning/jobs/{job_id}", headers=auth(key)).json()
        if job["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


def test_fine_tuning_jobs(runtime: Runtime, client: TestClient, make_key: KeyFactory) -> None:
    manager = make_key(Role.MODEL_MANAGER)
    requester = make_key(Role.REQUESTER)
    other_tenant = make_key(Role.MODEL_MANAGER, tenant="globex")
    make_images(runtime.settings.data_dir / "fine_tuning" / "images" / "brand", count=4)
    body: dict[str, Any] = {
        "model": "demo-tiny",
        "training_file": "brand",
        "suffix": "acme/api-lora",
        "hyperparameters": {"n_steps": 3, "rank": 2, "resolution": 32},
        "governance": {"rights": "owned", "intended_use": "research"},
    }
    r = client.post("/v1/fine_tuning/jobs", json=body, headers=auth(requester))
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"
    bad = client.post(
        "/v1/fine_tuning/jobs", json={**body, "training_file": "../etc"}, headers=auth(manager)
    )
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "training_file"

    refused = client.post(
        "/v1/fine_tuning/jobs",
        json={
            **body,
            "model": "stabilityai/sdxl-turbo",
            "suffix": "acme/nc",
            "governance": {"rights": "owned", "intended_use": "commercial"},
        },
        headers=auth(manager),
    ).json()
    slow = client.post(
        "/v1/fine_tuning/jobs",
        json={
            **body,
            "suffix": "acme/slow",
            "hyperparameters": {"n_steps": 5000, "resolution": 32},
        },
        headers=auth(manager),
    ).json()
    cancel = client.post(f"/v1/fine_tuning/jobs/{slow['id']}/cancel", headers=auth(manager))
    assert cancel.status_code == 200, cancel.text
    created = client.post("/v1/fine_tuning/jobs", json=body, headers=auth(manager))
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["object"] == "fine_tuning.job" and job["id"].startswith("ftjob-")

    failed = _wait(client, manager, refused["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "licence_policy_violation"
    assert "§1(a)" in failed["error"]["message"]
    assert _wait(client, manager, slow["id"])["status"] == "cancelled"
    done = _wait(client, manager, job["id"])
    assert done["status"] == "succeeded", done
    assert done["fine_tuned_model"] == "acme/api-lora"
    assert done["progress"]["step"] == done["progress"]["total_steps"] == 3
    assert len(done["governance"]["adapter_sha256"]) == 64
    draft_id = done["governance"]["draft_id"]
    legal = make_key(Role.LEGAL_EDITOR)
    draft = client.get(f"/v1/policies/versions/{draft_id}", headers=auth(legal)).json()
    assert draft["status"] == "draft" and "acme/api-lora" in draft["files"]["models.yaml"]
    hidden = client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=auth(other_tenant))
    assert hidden.status_code == 404
    again = client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=auth(manager))
    assert again.status_code == 409
