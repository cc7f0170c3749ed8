"""C2PA manifests and watermarks on delivered images, and /v1/provenance/verify.

Real app, real database (SQLite and PostgreSQL), real demo-tiny pipeline, real c2pa-python.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from gateway.cli import app
from gateway.db.engine import unit_of_work
from gateway.db.models import Decision
from gateway.domain import Role
from gateway.provenance import DIGITAL_SOURCE_TYPE
from gateway.provenance.credentials import CA_FILE
from gateway.provenance.manifest import GATEWAY_ASSERTION
from gateway.runtime import Runtime
from tests.conftest import KeyFactory, auth
from tests.provenance.helpers import (
    assertion,
    data_url,
    flip_last_pixel_byte,
    read_manifest,
    strip_to_jpeg,
)

BODY = {"model": "demo-tiny", "prompt": "a lighthouse at dusk", "steps": 1, "seed": 3}


def _generate(client: TestClient, key: str, **extra: Any) -> tuple[bytes, dict[str, Any]]:
    r = client.post("/v1/images/generations", json={**BODY, **extra}, headers=auth(key))
    assert r.status_code == 200, r.text
    body = r.json()
    return base64.b64decode(body["data"][0]["b64_json"]), body["governance"]


def _verify(client: TestClient, key: str, data: bytes, mime: str = "image/png") -> dict[str, Any]:
    r = client.post(
        "/v1/provenance/verify", json={"image": data_url(data, mime)}, headers=auth(key)
    )
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def _cli_env(runtime: Runtime) -> dict[str, str]:
    s = runtime.settings
    return {
        "GATEWAY_DATA_DIR": str(s.data_dir),
        "GATEWAY_DATABASE_URL": s.resolved_database_url,
        "GATEWAY_MODEL_DIR": str(s.resolved_model_dir),
        "GATEWAY_POLICY_DIR": str(s.policy_dir),
    }


def test_delivered_png_is_signed_watermarked_and_verifiable(
    client: TestClient, runtime: Runtime, make_key: KeyFactory, tmp_path: Path
) -> None:
    owner = make_key(Role.REQUESTER, tenant="acme")
    png, gov = _generate(client, owner, size="256x256")
    decision_id = gov["decision_id"]

    # a third party with the operator's CA certificate: Trusted, names decision and source
    anchors = (runtime.settings.data_dir / CA_FILE).read_text()
    store = read_manifest(png, "image/png", anchors)
    assert store["validation_state"] == "Trusted", store.get("validation_results")
    actions = assertion(store, "c2pa.actions")["actions"]
    assert actions[0]["action"] == "c2pa.created"
    assert actions[0]["digitalSourceType"] == DIGITAL_SOURCE_TYPE
    ours = assertion(store, GATEWAY_ASSERTION)
    assert ours["decision_id"] == decision_id and ours["model"]["id"] == "demo-tiny"
    assert ours["model"]["weights_sha256"] == gov["model"]["weights_sha256"]
    assert ours["rights"]["may_train_other_models"] is True
    assert assertion(store, "cawg.training-mining")["entries"]["cawg.ai_training"] == {
        "use": "allowed"
    }
    record_image = gov["images"][0]["provenance"]
    assert record_image["watermark"] == "embedded"
    payload = record_image["watermark_payload"]
    assert base64.b64decode(assertion(store, "c2pa.soft-binding")["blocks"][0]["value"]).hex() == (
        payload
    )
    with unit_of_work(runtime.sessions) as session:
        row = session.scalars(select(Decision).where(Decision.watermark == payload)).one()
        assert row.id == decision_id
        assert row.record is not None
        assert (
            row.record["images"][0]["provenance"]["manifest_sha256"]
            == (record_image["manifest_sha256"])
        )

    # untouched: valid, and found through the manifest
    answer = _verify(client, owner, png)
    assert answer["c2pa"] == {
        "present": True,
        "valid": True,
        "validation_state": "Trusted",
        "errors": [],
        "signed_by_this_gateway": True,
    }
    assert answer["watermark"] == {"detected": True, "payload": payload}
    assert answer["issued_by_this_gateway"] is True and answer["decision_id"] == decision_id
    assert answer["rights"]["licence"]["id"] == "apache-2.0"
    assert answer["decision"]["outcome"] == "allowed"

    # one pixel byte changed: the manifest is there but invalid; the watermark still names it
    tampered = flip_last_pixel_byte(png)
    a, b = (np.asarray(Image.open(io.BytesIO(x)), dtype=int) for x in (png, tampered))
    assert int(np.count_nonzero(a != b)) == 1
    answer = _verify(client, owner, tampered)
    assert answer["c2pa"]["present"] is True and answer["c2pa"]["valid"] is False
    assert answer["c2pa"]["validation_state"] == "Invalid"
    assert any("assertion.dataHash.mismatch" in e for e in answer["c2pa"]["errors"])
    assert answer["issued_by_this_gateway"] is True and answer["decision_id"] == decision_id

    # metadata stripped and re-encoded as JPEG q90: found through the watermark alone
    stripped = strip_to_jpeg(png, 90)
    answer = _verify(client, owner, stripped, "image/jpeg")
    assert answer["c2pa"]["present"] is False
    assert answer["watermark"]["detected"] is True
    assert answer["decision_id"] == decision_id and answer["rights"]["commercial_use"]

    # another tenant learns only that this gateway made it; an admin sees everything
    stranger = make_key(Role.REQUESTER, tenant="globex")
    answer = _verify(client, stranger, stripped, "image/jpeg")
    assert answer["issued_by_this_gateway"] is True and answer["decision_id"] is None
    assert "rights" not in answer and "decision" not in answer
    assert _verify(client, make_key(Role.ADMIN, tenant="ops"), png)["decision_id"] == decision_id

    # an image this gateway never made is not claimed
    foreign = io.BytesIO()
    Image.open(io.BytesIO(png)).transpose(Image.Transpose.ROTATE_90).save(foreign, "PNG")
    answer = _verify(client, owner, foreign.getvalue())
    assert answer["c2pa"]["present"] is False and answer["watermark"]["detected"] is False
    assert answer["issued_by_this_gateway"] is False and answer["decision_id"] is None

    # the command line gives the same answer
    path = tmp_path / "stripped.jpg"
    path.write_bytes(stripped)
    result = CliRunner().invoke(app, ["provenance", "verify", str(path)], env=_cli_env(runtime))
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["decision_id"] == decision_id and printed["issued_by_this_gateway"] is True
    (tmp_path / "foreign.png").write_bytes(foreign.getvalue())
    result = CliRunner().invoke(
        app, ["provenance", "verify", str(tmp_path / "foreign.png")], env=_cli_env(runtime)
    )
    assert result.exit_code == 1 and json.loads(result.stdout)["issued_by_this_gateway"] is False


def test_jpeg_and_webp_carry_the_same_manifest_and_watermark(
    client: TestClient, runtime: Runtime, make_key: KeyFactory
) -> None:
    key = make_key()
    anchors = (runtime.settings.data_dir / CA_FILE).read_text()
    for fmt, mime in (("jpeg", "image/jpeg"), ("webp", "image/webp")):
        r = client.post(
            "/v1/images/generations",
            json={**BODY, "size": "256x256", "output_format": fmt, "response_format": "url"},
            headers=auth(key),
        )
        assert r.status_code == 200, r.text
        url = r.json()["data"][0]["url"]
        assert url.startswith(f"data:{mime};base64,")
        data = base64.b64decode(url.partition(",")[2])
        assert Image.open(io.BytesIO(data)).format == fmt.upper()
        gov = r.json()["governance"]
        store = read_manifest(data, mime, anchors)
        assert store["validation_state"] == "Trusted"
        assert assertion(store, GATEWAY_ASSERTION)["decision_id"] == gov["decision_id"]
        answer = _verify(client, key, data, mime)
        assert answer["watermark"]["payload"] == gov["images"][0]["provenance"]["watermark_payload"]
        assert answer["decision_id"] == gov["decision_id"]


def test_below_the_watermark_minimum_the_decision_says_so(
    client: TestClient, runtime: Runtime, make_key: KeyFactory
) -> None:
    key = make_key()
    png, gov = _generate(client, key, size="64x64")
    prov = gov["images"][0]["provenance"]
    assert prov["watermark"] == "below_minimum_size" and prov["watermark_payload"] is None
    anchors = (runtime.settings.data_dir / CA_FILE).read_text()
    store = read_manifest(png, "image/png", anchors)
    assert store["validation_state"] == "Trusted"
    assert assertion(store, GATEWAY_ASSERTION)["decision_id"] == gov["decision_id"]
    assert _verify(client, key, png)["decision_id"] == gov["decision_id"]  # via the manifest
    # with the manifest gone there is nothing left to find it by, and nothing is claimed
    answer = _verify(client, key, strip_to_jpeg(png), "image/jpeg")
    assert answer["issued_by_this_gateway"] is False and answer["watermark"]["detected"] is False

    # a manifest naming this decision but signed by someone else is not taken at its word
    from gateway.provenance import Provenance
    from gateway.provenance.c2pa_io import sign
    from gateway.provenance.credentials import SigningCredentials, generate_local_ca
    from gateway.provenance.manifest import build_manifest

    ca, chain, private = generate_local_ca("forger")
    forger = SigningCredentials(chain, private, "es256", ca.decode(), True)
    claim = Provenance(gov["decision_id"], "demo-tiny", "apache-2.0", "0" * 64, {})
    plain = io.BytesIO()
    Image.open(io.BytesIO(png)).save(plain, "PNG")
    forged, _ = sign(plain.getvalue(), "png", build_manifest(claim, 0, None), forger)
    answer = _verify(client, key, forged)
    assert answer["c2pa"]["present"] is True and answer["c2pa"]["signed_by_this_gateway"] is False
    assert answer["issued_by_this_gateway"] is False and answer["decision_id"] is None


def test_verify_rejects_what_is_not_an_image(client: TestClient, make_key: KeyFactory) -> None:
    key = make_key()
    r = client.post(
        "/v1/provenance/verify", json={"image": "https://example.com/a.png"}, headers=auth(key)
    )
    assert r.status_code == 422 and r.json()["error"]["param"] == "image"
    r = client.post(
        "/v1/provenance/verify", json={"image": data_url(b"not an image")}, headers=auth(key)
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_image"
    r = client.post("/v1/provenance/verify", json={"image": data_url(b"x")})
    assert r.status_code == 401


def test_a_manifest_that_does_not_sign_fails_closed(
    runtime_factory: Callable[..., Runtime], settings_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """Operator credentials whose key does not match the certificate: nothing is delivered,
    and the decision records why."""
    from gateway.app import create_app
    from gateway.auth.keys import create_key
    from gateway.provenance.credentials import generate_local_ca

    _, chain, _ = generate_local_ca("a")
    _, _, other_key = generate_local_ca("b")
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(other_key)
    settings = settings_factory(
        c2pa_cert_chain=tmp_path / "chain.pem", c2pa_private_key=tmp_path / "key.pem"
    )
    runtime = runtime_factory(settings)
    with unit_of_work(runtime.sessions) as session:
        key = create_key(session, tenant="acme", roles=(Role.REQUESTER,)).secret
    with TestClient(create_app(runtime.settings, runtime)) as client:
        r = client.post("/v1/images/generations", json={**BODY, "size": "64x64"}, headers=auth(key))
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "safety_system_unavailable" and "data" not in r.json()
    with unit_of_work(runtime.sessions) as session:
        row = session.get(Decision, error["decision_id"])
        assert row is not None and row.outcome == "safety_system_unavailable"
        assert row.record is not None
        (failure,) = row.record["errors"]
        assert failure["stage"] == "provenance" and "c2pa_sign" in failure["message"]
        assert "images" not in row.record
