"""Bounded input: image bombs, oversized bodies and out-of-range ids get 4xx naming the field.

Runs on SQLite and PostgreSQL (the ``client`` fixture is parametrised over both).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from gateway.app import create_app
from gateway.auth.keys import authenticate, create_key
from gateway.db.engine import unit_of_work
from gateway.domain import Role
from gateway.errors import GatewayError
from gateway.policy.workflow import PolicyService
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.conftest import KeyFactory, auth


def _key(runtime: Runtime) -> str:
    with unit_of_work(runtime.sessions) as session:
        return create_key(session, tenant="acme", roles=(Role.REQUESTER,)).secret


def _png(size: tuple[int, int], mode: str = "1") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _part(raw: bytes, media: str = "image/png") -> dict[str, Any]:
    url = f"data:{media};base64," + base64.b64encode(raw).decode()
    return {"type": "image_url", "image_url": {"url": url}}


def _moderate(client: TestClient, key: str, parts: list[dict[str, Any]]) -> Any:
    return client.post("/v1/moderations", json={"input": parts}, headers=auth(key))


def _refused(r: Any, status: int, code: str, param: str | None) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == (code, param), r.text


def test_decompression_bombs_are_refused_before_decoding(
    client: TestClient, make_key: KeyFactory
) -> None:
    key = make_key()
    bomb = _png((16000, 12000))  # 192 Mpx: PIL's own DecompressionBombError territory
    assert len(bomb) < 64_000
    big = _png((12000, 12000))  # 144 Mpx: PIL would only warn, and decode it
    small = _part(_png((64, 64), "RGB"))
    text = {"type": "text", "text": "a bowl of fruit"}
    for raw in (bomb, big):
        r = _moderate(client, key, [text, small, text, _part(raw)])
        _refused(r, 413, "image_too_large", "input.3.image_url.url")
    just_over = _png((4001, 4000))  # 16,004,000 > the default 16 Mpx
    _refused(
        _moderate(client, key, [_part(just_over)]), 413, "image_too_large", "input.0.image_url.url"
    )
    r = _moderate(client, key, [small, text])
    assert r.status_code == 200, r.text


def test_truncated_and_foreign_images_are_422(client: TestClient, make_key: KeyFactory) -> None:
    key = make_key()
    png = _png((256, 256), "RGB")
    cases: list[tuple[dict[str, Any], str]] = [
        (_part(png[: len(png) // 2]), "input.1.image_url.url"),
        (_part(b"GIF89a" + b"\x00" * 20, "image/gif"), "input.1.image_url.url"),
        (_part(b"%!PS-Adobe-3.0 EPSF-3.0\n", "image/eps"), "input.1.image_url.url"),
        (
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}},
            "input.1.image_url.url",
        ),
    ]
    ok = _part(_png((8, 8), "RGB"))
    for part, param in cases:
        _refused(_moderate(client, key, [ok, part]), 422, "invalid_image", param)


def test_per_request_pixel_budget(
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(
        max_image_pixels=10_000, max_request_image_pixels=25_000, max_image_bytes=4_000
    )
    runtime = runtime_factory(settings)
    with TestClient(create_app(settings, runtime)) as client:
        key = _key(runtime)
        tile = _part(_png((100, 100), "RGB"))  # 10,000 px each: exactly the per-image limit
        assert _moderate(client, key, [tile, tile]).status_code == 200
        _refused(
            _moderate(client, key, [tile, tile, tile]),
            413,
            "image_too_large",
            "input.2.image_url.url",
        )
        noisy = Image.effect_noise((90, 90), 80).convert("RGB")
        buffer = io.BytesIO()
        noisy.save(buffer, format="PNG")
        assert len(buffer.getvalue()) > 4_000
        _refused(
            _moderate(client, key, [_part(buffer.getvalue())]),
            413,
            "image_too_large",
            "input.0.image_url.url",
        )


def test_request_body_is_bounded(
    runtime_factory: Callable[..., Runtime], settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(max_request_bytes=64 * 1024)
    runtime = runtime_factory(settings)
    key = _key(runtime)
    with TestClient(create_app(settings, runtime)) as client:
        r = client.post("/v1/moderations", json={"input": ["x" * 30_000] * 3}, headers=auth(key))
        _refused(r, 413, "request_too_large", None)

        def chunks() -> Any:
            for _ in range(10):
                yield b" " * 10_000

        r = client.post(
            "/v1/moderations",
            content=chunks(),
            headers={**auth(key), "Content-Type": "application/json"},
        )
        _refused(r, 413, "request_too_large", None)
        assert (
            client.post("/v1/moderations", json={"input": "x"}, headers=auth(key)).status_code
            == 200
        )


ID_ROUTES = [
    ("get", "/v1/policies/versions/{id}"),
    ("get", "/v1/policies/versions/{id}/diff/1"),
    ("get", "/v1/policies/versions/1/diff/{id}"),
    ("put", "/v1/policies/drafts/{id}"),
    ("post", "/v1/policies/drafts/{id}/validate"),
    ("post", "/v1/policies/drafts/{id}/test"),
    ("post", "/v1/policies/drafts/{id}/replay"),
    ("post", "/v1/policies/drafts/{id}/submit"),
    ("post", "/v1/policies/drafts/{id}/approve"),
    ("post", "/v1/policies/drafts/{id}/reject"),
]
BODIES: dict[str, dict[str, Any]] = {
    "put": {"files": {}},
    "reject": {"reason": "no"},
}


@pytest.mark.parametrize("value", [0, -1, 2**31, 2**31 + 7, 2**63, 2**64 + 1, 10**30])
def test_out_of_range_ids_are_422_never_500(
    client: TestClient, make_key: KeyFactory, value: int
) -> None:
    key = make_key(Role.ADMIN, tenant="ops")
    for method, template in ID_ROUTES:
        path = template.replace("{id}", str(value))
        body = BODIES.get(method) or BODIES.get(path.rsplit("/", 1)[-1])
        r = client.request(method.upper(), path, json=body, headers=auth(key))
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["param"] in ("version_id", "draft_id", "a", "b"), r.text
    r = client.post("/v1/policies/drafts", json={"base_version": value}, headers=auth(key))
    _refused(r, 422, "invalid_request", "base_version")
    # the largest id in range is simply not there
    r = client.get(f"/v1/policies/versions/{2**31 - 1}", headers=auth(key))
    assert r.status_code == 404, r.text
    r = client.post("/v1/policies/drafts", json={"base_version": 2**31 - 1}, headers=auth(key))
    assert r.status_code == 404, r.text


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/v1/audit/decisions", {"limit": 2**63}, "limit"),
        ("/v1/audit/decisions", {"limit": -(2**63) - 1}, "limit"),
        ("/v1/audit/decisions", {"since": ""}, "since"),
        ("/v1/audit/decisions", {"outcome": ""}, "outcome"),
        ("/v1/audit/export", {"until": "99999-01-01"}, "until"),
    ],
)
def test_other_integers_and_filters_are_range_checked(
    client: TestClient, make_key: KeyFactory, path: str, params: dict[str, Any], param: str
) -> None:
    r = client.get(path, params=params, headers=auth(make_key(Role.ADMIN, tenant="ops")))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"] == param


def test_generation_integers_are_range_checked(client: TestClient, make_key: KeyFactory) -> None:
    key = make_key()
    base = {"model": "demo-tiny", "prompt": "a red apple", "size": "64x64"}
    for field, value in (
        ("seed", 2**63),
        ("steps", 2**31),
        ("n", 2**64),
        ("seed", "7"),
        ("n", True),
    ):
        r = client.post("/v1/images/generations", json={**base, field: value}, headers=auth(key))
        _refused(r, 422, "invalid_request", field)
    r = client.post(
        "/v1/images/generations", json={**base, "steps": 1.0, "seed": 3.0}, headers=auth(key)
    )
    assert r.status_code == 200, r.text  # 1.0 is a JSON Schema integer
    r = client.post(
        "/v1/policies/drafts/1/replay",
        json={"limit": 2**40},
        headers=auth(make_key(Role.ADMIN, tenant="ops")),
    )
    _refused(r, 422, "invalid_request", "limit")


@pytest.mark.parametrize(
    ("files", "note", "param"),
    [
        ({"content\x00.yaml": "x: 1\n"}, None, "files"),
        ({"extra.yaml": "x: 1\x00\n"}, None, "files"),
        ({}, "a note with a \x00 in it", "note"),
    ],
)
def test_a_nul_in_a_draft_is_422_never_500(
    client: TestClient,
    runtime: Runtime,
    make_key: KeyFactory,
    files: dict[str, str],
    note: str | None,
    param: str,
) -> None:
    """PostgreSQL cannot store NUL (schemathesis found a 500 on PUT .../drafts/{id})."""
    key = make_key(Role.LEGAL_EDITOR, tenant="ops")
    draft = client.post("/v1/policies/drafts", json={}, headers=auth(key))
    assert draft.status_code == 201, draft.text
    draft_id = draft.json()["id"]
    for method, path in (
        ("POST", "/v1/policies/drafts"),
        ("PUT", f"/v1/policies/drafts/{draft_id}"),
    ):
        r = client.request(method, path, json={"files": files, "note": note}, headers=auth(key))
        assert r.status_code == 422, r.text
        assert r.json()["error"]["param"].startswith(param), r.text
    # the same rule where the console edits drafts (the service behind both)
    with unit_of_work(runtime.sessions) as session:
        pepper = runtime.settings.key_pepper
        principal = authenticate(session, key, pepper.get_secret_value() if pepper else "")
    assert principal is not None
    with pytest.raises(GatewayError) as refused:
        PolicyService(runtime).update_draft(principal, draft_id, files, note)
    assert refused.value.status == 422
