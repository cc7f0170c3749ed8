"""Bad input gets a clear error naming the field, never a 500 and never a record."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gateway.db.models import Decision
from gateway.domain import Role
from gateway.runtime import Runtime
from tests.conftest import KeyFactory, auth

BODY: dict[str, Any] = {"model": "demo-tiny", "prompt": "a red apple", "size": "64x64"}


def _decisions(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Decision)) or 0


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"prompt": "nul\x00byte"}, "prompt"),
        ({"prompt": 12}, "prompt"),
        ({"n": 0}, "n"),
        ({"n": 5}, "n"),
        ({"n": "2"}, "n"),
        ({"size": "big"}, "size"),
        ({"size": "96x96"}, "size"),
        ({"steps": 0}, "steps"),
        ({"steps": 51}, "steps"),
        ({"seed": -1}, "seed"),
        ({"response_format": "jpeg"}, "response_format"),
        ({"governance": {"intended_use": "world_domination"}}, "governance.intended_use"),
        ({"governance": "commercial"}, "governance"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_fields_are_422_naming_the_field(
    client: TestClient, runtime: Runtime, make_key: KeyFactory, change: dict[str, Any], param: str
) -> None:
    r = client.post("/v1/images/generations", json={**BODY, **change}, headers=auth(make_key()))
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert err["type"] == "invalid_request_error"
    assert param.split(".")[0] in err["message"]
    assert _decisions(runtime) == 0


def test_missing_required_field(client: TestClient, make_key: KeyFactory) -> None:
    r = client.post("/v1/images/generations", json={"model": "demo-tiny"}, headers=auth(make_key()))
    assert r.status_code == 422 and r.json()["error"]["param"] == "prompt"


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"a string"'])
def test_unparsable_or_non_object_body_is_400(
    client: TestClient, make_key: KeyFactory, raw: bytes
) -> None:
    headers = {**auth(make_key()), "content-type": "application/json"}
    r = client.post("/v1/images/generations", content=raw, headers=headers)
    assert r.status_code in (400, 422), r.text
    assert r.json()["error"]["code"] in ("invalid_json", "invalid_request")
    assert r.status_code != 500


def test_wrong_or_missing_key_is_401(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer gk_nope_nope"}, {"Authorization": "Basic x"}):
        r = client.post("/v1/images/generations", json=BODY, headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"


def test_key_without_the_role_is_403(client: TestClient, make_key: KeyFactory) -> None:
    r = client.post("/v1/images/generations", json=BODY, headers=auth(make_key(Role.AUDITOR)))
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"


def test_key_limited_to_some_uses(client: TestClient, make_key: KeyFactory) -> None:
    key = make_key(Role.REQUESTER, default_intended_use="research", allowed_uses=["research"])
    ok = client.post("/v1/images/generations", json=BODY, headers=auth(key))
    assert ok.status_code == 200 and ok.json()["governance"]["intended_use"] == "research"
    r = client.post(
        "/v1/images/generations",
        json={**BODY, "governance": {"intended_use": "commercial"}},
        headers=auth(key),
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "intended_use_not_permitted"


def test_unknown_route_is_json_404(client: TestClient) -> None:
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()
