"""Console fixtures: an HTTPS TestClient (the cookie is Secure) and sign-in helpers."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, sync_playwright

from gateway.app import create_app
from gateway.runtime import Runtime
from tests.console.live import chromium_path, serve

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
BODY = {"model": "demo-tiny", "prompt": "a lighthouse at dusk", "size": "64x64", "steps": 2}


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


@pytest.fixture
def console(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime.settings, runtime), base_url="https://testserver") as c:
        yield c


def sign_in(client: TestClient, key: str) -> httpx.Response:
    """Sign in through the form, as a browser does; returns the redirect."""
    page = client.get("/console/login")
    assert page.status_code == 200
    return client.post(
        "/console/login",
        data={"csrf_token": csrf_of(page.text), "api_key": key},
        follow_redirects=False,
    )


def signed_in(client: TestClient, key: str) -> TestClient:
    r = sign_in(client, key)
    assert r.status_code == 303, r.text
    return client


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium (fails, never skips, when it is missing)."""
    path = chromium_path()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def live(runtime: Runtime) -> Iterator[str]:
    """The app on a real uvicorn server; its base URL."""
    with serve(create_app(runtime.settings, runtime)) as url:
        yield url
