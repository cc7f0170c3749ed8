"""Signing in and out: the cookie's flags and encryption, CSRF, expiry, revoked keys."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.console.session import COOKIE, ConsoleSession, SessionCodec
from gateway.db.engine import unit_of_work
from gateway.db.models import ApiKey
from gateway.domain import Role
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.conftest import KeyFactory
from tests.console.conftest import csrf_of, sign_in, signed_in


def _set_cookie(response_headers: list[str]) -> str:
    cookies = [h for h in response_headers if h.startswith(f"{COOKIE}=")]
    assert len(cookies) == 1, response_headers
    return cookies[0]


def test_sign_in_sets_an_encrypted_httponly_secure_strict_cookie(
    console: TestClient, make_key: KeyFactory
) -> None:
    key = make_key(Role.AUDITOR)
    r = sign_in(console, key)
    assert r.status_code == 303 and r.headers["location"] == "/console"
    header = _set_cookie(r.headers.get_list("set-cookie"))
    flags = [part.strip().lower() for part in header.split(";")]
    assert "httponly" in flags and "secure" in flags and "samesite=strict" in flags
    assert "path=/console" in flags
    assert "max-age=28800" in flags  # 8 hours
    assert any(f.startswith("expires=") for f in flags)
    value = header.split(";")[0].split("=", 1)[1]
    secret = key.split("_", 2)[2]  # gk_<id>_<secret>; the secret itself may hold "_"
    assert key not in value and secret not in value and "gk_" not in value
    home = console.get("/console")
    assert home.status_code == 200 and "Sign out" in home.text


def test_cookie_is_not_secure_when_turned_off(
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
    make_key: KeyFactory,
) -> None:
    runtime = runtime_factory(settings_factory(console_cookie_secure=False))
    with TestClient(create_app(runtime.settings, runtime)) as client:  # plain http
        key = make_key(Role.AUDITOR)
        r = sign_in(client, key)
        assert r.status_code == 303
        assert "secure" not in _set_cookie(r.headers.get_list("set-cookie")).lower()
        assert client.get("/console/audit/decisions").status_code == 200


def test_console_key_file_is_private_and_a_configured_secret_is_used(
    runtime: Runtime, settings_factory: Callable[..., Settings], make_key: KeyFactory
) -> None:
    with TestClient(create_app(runtime.settings, runtime), base_url="https://testserver") as c:
        signed_in(c, make_key(Role.AUDITOR))
        cookie = c.cookies[COOKIE]
    path = Path(runtime.settings.data_dir) / "console.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    session = SessionCodec(path.read_bytes().strip(), secure=True, lifetime_s=3600).decode(cookie)
    assert session is not None and session.key is not None and session.key.startswith("gk_")

    configured = Fernet.generate_key().decode()
    other = settings_factory(console_secret=configured)
    codec = SessionCodec.from_settings(other)
    assert codec.decode(cookie) is None  # another secret cannot read it
    assert codec.decode(codec.encode(codec.new("gk_x_y"))) is not None


def test_every_page_sends_security_headers(console: TestClient, make_key: KeyFactory) -> None:
    for r in (console.get("/console/login"), signed_in(console, make_key()).get("/console")):
        assert r.headers["x-frame-options"] == "DENY"
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"


def test_not_signed_in_is_sent_to_sign_in_page(console: TestClient) -> None:
    r = console.get("/console/audit/decisions?outcome=allowed", follow_redirects=False)
    assert r.status_code == 303
    target = "/console/audit/decisions%3Foutcome%3Dallowed"
    assert r.headers["location"] == f"/console/login?next={target}"


def test_wrong_key_is_refused(console: TestClient, make_key: KeyFactory) -> None:
    make_key(Role.AUDITOR)
    r = sign_in(console, "gk_nothere_nope")
    assert r.status_code == 401 and "not valid" in r.text
    assert console.get("/console", follow_redirects=False).status_code == 303


def test_sign_in_without_the_forms_csrf_token_is_refused(
    console: TestClient, make_key: KeyFactory
) -> None:
    key = make_key(Role.AUDITOR)
    console.get("/console/login")
    r = console.post("/console/login", data={"api_key": key}, follow_redirects=False)
    assert r.status_code == 403
    fresh = TestClient(console.app, base_url="https://testserver")  # no cookie at all
    r = fresh.post(
        "/console/login", data={"api_key": key, "csrf_token": "x"}, follow_redirects=False
    )
    assert r.status_code == 403
    assert console.get("/console", follow_redirects=False).status_code == 303


def test_sign_out_needs_the_token_and_clears_the_cookie(
    console: TestClient, make_key: KeyFactory
) -> None:
    signed_in(console, make_key(Role.AUDITOR))
    page = console.get("/console")
    refused = console.post("/console/logout", data={"csrf_token": "forged"})
    assert refused.status_code == 403 and "security token" in refused.text
    assert console.get("/console").status_code == 200  # still signed in
    r = console.post(
        "/console/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert "Max-Age=0" in _set_cookie(r.headers.get_list("set-cookie"))
    assert console.get("/console", follow_redirects=False).status_code == 303


def test_csrf_token_changes_at_sign_in(console: TestClient, make_key: KeyFactory) -> None:
    login_token = csrf_of(console.get("/console/login").text)
    signed_in(console, make_key(Role.AUDITOR))
    assert csrf_of(console.get("/console").text) != login_token


def test_revoked_key_is_locked_out_at_once(
    console: TestClient, runtime: Runtime, make_key: KeyFactory
) -> None:
    key = make_key(Role.AUDITOR)
    signed_in(console, key)
    assert console.get("/console/audit/decisions").status_code == 200
    with unit_of_work(runtime.sessions) as session:
        row = session.get(ApiKey, key.split("_")[1])
        assert row is not None
        row.revoked_at = datetime.now(UTC)
    r = console.get("/console/audit/decisions", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    assert "Max-Age=0" in _set_cookie(r.headers.get_list("set-cookie"))
    again = sign_in(console, key)
    assert again.status_code == 401


def test_altered_or_expired_cookie_is_refused(
    console: TestClient, runtime: Runtime, make_key: KeyFactory
) -> None:
    key = make_key(Role.AUDITOR)
    signed_in(console, key)
    good = console.cookies[COOKIE]
    console.cookies.set(COOKIE, good[:-4] + "AAAA", domain="testserver.local", path="/console")
    codec = SessionCodec.from_settings(runtime.settings)
    expired = codec.encode(ConsoleSession(key=key, csrf="t", expires=1))
    for value in (good[:-4] + "AAAA", expired, "not-a-token"):
        console.cookies.clear()
        console.cookies.set(COOKIE, value, domain="testserver.local", path="/console")
        assert console.get("/console", follow_redirects=False).status_code == 303


def test_next_only_leads_inside_the_console(console: TestClient, make_key: KeyFactory) -> None:
    key = make_key(Role.AUDITOR)
    for target, expected in (
        ("/console/audit/verify", "/console/audit/verify"),
        ("//evil.example/console", "/console"),
        ("https://evil.example/", "/console"),
    ):
        console.cookies.clear()
        page = console.get("/console/login", params={"next": target})
        r = console.post(
            "/console/login",
            data={"csrf_token": csrf_of(page.text), "api_key": key, "next": target},
            follow_redirects=False,
        )
        assert r.headers["location"] == expected
