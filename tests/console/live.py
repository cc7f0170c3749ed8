"""A real uvicorn server in a thread and Debian's Chromium driven by Playwright.

The browser tests need Chromium at /usr/bin/chromium (``apt-get install chromium``; .ci/run
installs it). When it is missing they fail rather than skip: the console is only known to
work in a browser once a browser has used it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Page, expect

CHROMIUM = Path("/usr/bin/chromium")


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1; yields its base URL ('http://localhost:N')."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        # 'localhost' is a secure context for browsers, so the Secure cookie works over http
        yield f"http://localhost:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def chromium_path() -> str:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: install it (apt-get install -y chromium); "
            "the console's browser tests must run, not skip"
        )
    return str(CHROMIUM)


def sign_in(page: Page, base: str, key: str) -> None:
    """Open the console, get sent to the sign-in form, sign in with ``key``."""
    page.goto(f"{base}/console")
    expect(page).to_have_url(f"{base}/console/login?next=/console")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
