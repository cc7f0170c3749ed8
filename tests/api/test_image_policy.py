"""Per-image policy through HTTP with the open_clip concept checker on a tiny CLIP model.

Detection is forced through policy thresholds (a concept at -2.0 always fires), the way
legal would tune them, so that block and quarantine are exercised end to end.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from gateway.app import create_app
from gateway.auth.keys import create_key
from gateway.db.engine import unit_of_work
from gateway.db.models import AuditEvent
from gateway.domain import Role
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.conftest import REPO, auth
from tests.tiny_clip import build_tiny_clip, clip_pin

BODY = {"model": "demo-tiny", "prompt": "a quiet harbour", "size": "64x64", "steps": 2, "n": 2}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


def _policy(tmp_path: Path, concepts: str, violence_image_actions: str) -> Path:
    folder = tmp_path / "policies"
    shutil.copytree(REPO / "policies", folder)
    content = (folder / "content.yaml").read_text()
    head, _, _ = content.partition("  concepts:\n")
    content = head + "  concepts:\n" + concepts
    old = "      image: {block_at: high, quarantine_at: medium}\n    terms: [gore"
    assert old in content
    content = content.replace(old, f"      image: {violence_image_actions}\n    terms: [gore")
    (folder / "content.yaml").write_text(content)
    return folder


def _client(runtime: Runtime) -> tuple[TestClient, str]:
    with unit_of_work(runtime.sessions) as session:
        key = create_key(session, tenant="acme", roles=[Role.REQUESTER, Role.AUDITOR]).secret
    return TestClient(create_app(runtime.settings, runtime)), key


def test_fired_concept_blocks_every_image(
    tmp_path: Path,
    clip_dir: Path,
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
) -> None:
    policy = _policy(
        tmp_path,
        "    - {text: a bloody wound, category: violence, threshold: -2.0}\n",
        "{block_at: high}",
    )
    runtime = runtime_factory(
        settings_factory(policy_dir=policy, clip_dir=clip_dir, clip_sha256=clip_pin(clip_dir))
    )
    client, key = _client(runtime)
    r = client.post("/v1/images/generations", json=BODY, headers=auth(key))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "output_filtered" and err["categories"] == ["violence"]
    record = client.get(f"/v1/audit/decisions/{err['decision_id']}", headers=auth(key)).json()
    assert record["outcome"] == "output_filtered"
    assert [i["action"] for i in record["images"]] == ["block", "block"]
    assert "image.concepts:a bloody wound" in record["images"][0]["assessment"]["matched_rules"]


def test_quarantine_withholds_and_keeps_the_image(
    tmp_path: Path,
    clip_dir: Path,
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
) -> None:
    policy = _policy(
        tmp_path,
        "    - {text: a bloody wound, category: violence, threshold: -2.0}\n",
        "{block_at: never, quarantine_at: low}",
    )
    settings = settings_factory(
        policy_dir=policy, clip_dir=clip_dir, clip_sha256=clip_pin(clip_dir)
    )
    runtime = runtime_factory(settings)
    client, key = _client(runtime)
    r = client.post("/v1/images/generations", json=BODY, headers=auth(key))
    assert r.status_code == 400
    decision_id = r.json()["error"]["decision_id"]
    assert not (settings.data_dir / "quarantine").exists()  # kept in the shared database
    record = client.get(f"/v1/audit/decisions/{decision_id}", headers=auth(key)).json()
    assert [i["action"] for i in record["images"]] == ["quarantine", "quarantine"]
    for image in record["images"]:  # an auditor reveals each, byte for byte as recorded
        shown = client.get(
            f"/v1/audit/decisions/{decision_id}/images/{image['index']}", headers=auth(key)
        )
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
        assert hashlib.sha256(shown.content).hexdigest() == image["sha256"]
        assert Image.open(io.BytesIO(shown.content)).size == (64, 64)
    with unit_of_work(runtime.sessions) as session:  # each reveal is on the audit trail
        reveals = session.scalars(
            select(AuditEvent.payload).where(AuditEvent.kind == "quarantine.revealed")
        ).all()
    assert [json.loads(p)["body"]["index"] for p in reveals] == [0, 1]
    assert all(json.loads(p)["body"]["decision_id"] == decision_id for p in reveals)
    missing = client.get(f"/v1/audit/decisions/{decision_id}/images/2", headers=auth(key))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "image_not_found"
    with unit_of_work(runtime.sessions) as session:  # another tenant's auditor sees nothing
        other = create_key(session, tenant="globex", roles=[Role.AUDITOR]).secret
    hidden = client.get(f"/v1/audit/decisions/{decision_id}/images/0", headers=auth(other))
    assert hidden.status_code == 404
    requester = client.get(
        f"/v1/audit/decisions/{decision_id}/images/0", headers=auth(_requester(runtime))
    )
    assert requester.status_code == 403


def _requester(runtime: Runtime) -> str:
    with unit_of_work(runtime.sessions) as session:
        return create_key(session, tenant="acme", roles=[Role.REQUESTER]).secret


def test_quarantine_over_the_cap_refuses_the_request(
    tmp_path: Path,
    clip_dir: Path,
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
) -> None:
    policy = _policy(
        tmp_path,
        "    - {text: a bloody wound, category: violence, threshold: -2.0}\n",
        "{block_at: never, quarantine_at: low}",
    )
    settings = settings_factory(
        policy_dir=policy,
        clip_dir=clip_dir,
        clip_sha256=clip_pin(clip_dir),
        quarantine_max_total_bytes=100,
    )
    runtime = runtime_factory(settings)
    client, key = _client(runtime)
    r = client.post("/v1/images/generations", json=BODY, headers=auth(key))
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "safety_system_unavailable" and "quarantine" in err["message"]
    record = client.get(f"/v1/audit/decisions/{err['decision_id']}", headers=auth(key)).json()
    assert record["outcome"] == "safety_system_unavailable"
    assert "GATEWAY_QUARANTINE_MAX_TOTAL_BYTES" in record["errors"][0]["message"]


def test_quarantine_in_an_fsspec_store(
    tmp_path: Path,
    clip_dir: Path,
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
) -> None:
    policy = _policy(
        tmp_path,
        "    - {text: a bloody wound, category: violence, threshold: -2.0}\n",
        "{block_at: never, quarantine_at: low}",
    )
    store = tmp_path / "bucket"
    settings = settings_factory(
        policy_dir=policy,
        clip_dir=clip_dir,
        clip_sha256=clip_pin(clip_dir),
        quarantine_url=store.as_uri() + "/quarantine",
    )
    runtime = runtime_factory(settings)
    client, key = _client(runtime)
    r = client.post("/v1/images/generations", json=BODY, headers=auth(key))
    assert r.status_code == 400
    decision_id = r.json()["error"]["decision_id"]
    kept = sorted((store / "quarantine" / decision_id).iterdir())
    assert [p.name for p in kept] == ["0.png", "1.png"]
    shown = client.get(f"/v1/audit/decisions/{decision_id}/images/1", headers=auth(key))
    assert shown.status_code == 200 and shown.content == kept[1].read_bytes()


def test_special_care_alone_does_not_block_but_lowers_the_bar(
    tmp_path: Path,
    clip_dir: Path,
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
) -> None:
    concepts = (
        "    - {text: a photo of a child, category: sexual/minors, threshold: -2.0,"
        " special_care: true}\n"
        "    - {text: a bloody wound, category: violence, threshold: 2.0}\n"
    )
    policy = _policy(tmp_path, concepts, "{block_at: high}")
    runtime = runtime_factory(
        settings_factory(policy_dir=policy, clip_dir=clip_dir, clip_sha256=clip_pin(clip_dir))
    )
    client, key = _client(runtime)
    r = client.post("/v1/images/generations", json=BODY, headers=auth(key))
    assert r.status_code == 200, r.text
    images = r.json()["governance"]["images"]
    detectors = images[0]["assessment"]["details"]["detectors"]["clip_concepts"]
    assert detectors["special_care"] == ["a photo of a child"]
    assert all(i["action"] == "allow" for i in images)
