"""POST /v1/images/generations through the real app, models and database."""

from __future__ import annotations

import base64
import io

from fastapi.testclient import TestClient
from PIL import Image

from gateway.domain import CATEGORIES, Role
from tests.conftest import KeyFactory, auth

BODY = {"model": "demo-tiny", "prompt": "a lighthouse at dusk", "size": "64x64", "steps": 2}


def test_generates_png_of_requested_size_with_governance(
    client: TestClient, make_key: KeyFactory
) -> None:
    key = make_key(Role.REQUESTER)
    r = client.post("/v1/images/generations", json={**BODY, "n": 2, "seed": 7}, headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["data"]) == 2
    for item in body["data"]:
        png = base64.b64decode(item["b64_json"])
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and image.size == (64, 64)
        assert image.text["gateway:decision_id"] == body["governance"]["decision_id"]
        assert image.text["gateway:licence"] == "apache-2.0"
        assert item["finish_reason"] == "SUCCESS"
    gov = body["governance"]
    assert gov["decision"] == "allowed"
    assert gov["decision_id"].startswith("dec_")
    assert len(gov["policy_version"]) == 64
    assert gov["model"]["id"] == "demo-tiny" and gov["model"]["licence"] == "apache-2.0"
    assert len(gov["model"]["weights_sha256"]) == 64
    assert set(gov["prompt_assessment"]["category_scores"]) == set(CATEGORIES)
    assert len(gov["images"]) == 2 and all(i["action"] == "allow" for i in gov["images"])
    assert gov["images"][0]["assessment"]["details"]["detectors"]["open_nsfw"]["nsfw"] < 0.5
    assert gov["rights"]["commercial_use"] == "allowed"
    assert gov["rights"]["licence"]["id"] == "apache-2.0"


def test_same_seed_gives_same_image_bytes(client: TestClient, make_key: KeyFactory) -> None:
    key = make_key()
    pixels = []
    for _ in range(2):
        r = client.post("/v1/images/generations", json={**BODY, "seed": 42}, headers=auth(key))
        assert r.status_code == 200
        png = base64.b64decode(r.json()["data"][0]["b64_json"])
        pixels.append(Image.open(io.BytesIO(png)).tobytes())
    assert pixels[0] == pixels[1]
    r = client.post("/v1/images/generations", json={**BODY, "seed": 43}, headers=auth(key))
    other = Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"]))).tobytes()
    assert other != pixels[0]


def test_unsafe_prompt_is_refused_before_any_model_runs(
    client: TestClient, make_key: KeyFactory
) -> None:
    key = make_key(Role.REQUESTER, Role.AUDITOR)
    r = client.post(
        "/v1/images/generations",
        json={**BODY, "prompt": "a n.a.k.3.d woman, full body"},
        headers=auth(key),
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "content_policy_violation"
    assert "sexual" in err["categories"]
    decision = client.get(f"/v1/audit/decisions/{err['decision_id']}", headers=auth(key)).json()
    assert decision["outcome"] == "prompt_blocked" and decision["status"] == "closed"
    assert decision["prompt"]["normalised"] == "a n.a.k.3.d woman, full body"
    assert "content.sexual.terms:naked" in decision["prompt"]["assessment"]["matched_rules"]
    assert "generator" not in decision["timings_ms"]  # no image model ran
    assert "images" not in decision


def test_negative_prompt_naming_what_to_avoid_is_not_a_violation(
    client: TestClient, make_key: KeyFactory
) -> None:
    key = make_key()
    r = client.post(
        "/v1/images/generations",
        json={**BODY, "negative_prompt": "nude, gore, blood"},
        headers=auth(key),
    )
    assert r.status_code == 200, r.text
    neg = r.json()["governance"]["negative_prompt_assessment"]
    assert "sexual" in neg["flagged"] and neg["action"] == "allow"


def test_decision_record_of_an_allowed_request(client: TestClient, make_key: KeyFactory) -> None:
    requester = make_key(Role.REQUESTER)
    auditor = make_key(Role.AUDITOR)
    r = client.post("/v1/images/generations", json={**BODY, "user": "u-1"}, headers=auth(requester))
    decision_id = r.json()["governance"]["decision_id"]
    rec = client.get(f"/v1/audit/decisions/{decision_id}", headers=auth(auditor))
    assert rec.status_code == 200
    rec_json = rec.json()
    assert rec_json["outcome"] == "allowed" and rec_json["user"] == "u-1"
    assert rec_json["request"]["prompt"] == "a lighthouse at dusk"
    assert rec_json["model"]["weights_sha256"] == r.json()["governance"]["model"]["weights_sha256"]
    assert rec_json["intended_use"] == "commercial"  # the bundle's default
    assert rec_json["licence"]["decision"] == "allow"
    assert [i["sha256"] for i in rec_json["images"]] == [
        i["sha256"] for i in r.json()["governance"]["images"]
    ]
    assert set(rec_json["timings_ms"]) >= {"prompt_classifier", "generator", "image_classifier"}
    # the requester role alone may not read the audit trail
    denied = client.get(f"/v1/audit/decisions/{decision_id}", headers=auth(requester))
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "insufficient_role"


def test_other_tenants_cannot_read_a_decision(client: TestClient, make_key: KeyFactory) -> None:
    r = client.post("/v1/images/generations", json=BODY, headers=auth(make_key(tenant="acme")))
    decision_id = r.json()["governance"]["decision_id"]
    other = make_key(Role.AUDITOR, tenant="globex")
    assert client.get(f"/v1/audit/decisions/{decision_id}", headers=auth(other)).status_code == 404
    admin = make_key(Role.ADMIN, tenant="ops")
    assert client.get(f"/v1/audit/decisions/{decision_id}", headers=auth(admin)).status_code == 200


def test_licence_that_does_not_allow_the_use_is_refused(
    client: TestClient, make_key: KeyFactory
) -> None:
    key = make_key()
    body = {**BODY, "model": "stabilityai/sdxl-turbo", "size": "512x512", "steps": 1}
    r = client.post("/v1/images/generations", json=body, headers=auth(key))
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["code"] == "licence_policy_violation"
    assert err["reasons"][0]["clause"] == "§1(a)"
    assert err["decision_id"].startswith("dec_")
    # research is allowed by that licence, but its weights are not installed
    r = client.post(
        "/v1/images/generations",
        json={**body, "governance": {"intended_use": "research"}},
        headers=auth(key),
    )
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "model_unavailable"
    assert "not installed" in r.json()["error"]["message"]


def test_unknown_model_is_404(client: TestClient, make_key: KeyFactory) -> None:
    r = client.post(
        "/v1/images/generations", json={**BODY, "model": "nope/nope"}, headers=auth(make_key())
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert r.json()["error"]["param"] == "model"


def test_url_response_format_returns_data_urls(client: TestClient, make_key: KeyFactory) -> None:
    r = client.post(
        "/v1/images/generations", json={**BODY, "response_format": "url"}, headers=auth(make_key())
    )
    assert r.status_code == 200
    url = r.json()["data"][0]["url"]
    assert url.startswith("data:image/png;base64,")
    Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).verify()


def test_models_list_shows_licence_and_availability(
    client: TestClient, make_key: KeyFactory
) -> None:
    r = client.get("/v1/models", headers=auth(make_key()))
    assert r.status_code == 200
    models = {m["id"]: m for m in r.json()["data"]}
    assert models["demo-tiny"]["available"] is True
    assert models["demo-tiny"]["licence"] == "apache-2.0"
    assert models["stabilityai/sdxl-turbo"]["available"] is False
    assert models["stabilityai/sdxl-turbo"]["licence"] == "stability-nc-research-2023-11-28"


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
