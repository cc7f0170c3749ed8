"""A 500 never breaks the connection: the next request on the same keep-alive one succeeds.

A real uvicorn process serves the real app plus a route with a bug (tests/serve_with_fault.py),
and one httpx client sends both requests over a single connection. (Before the fix, uvicorn
got the exception back after the 500 was sent and reset the connection: the next request
failed with ``ConnectionResetError``.) The database plays no part, so SQLite only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.serve_with_fault import SECRET

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _local_port(response: httpx.Response) -> int:
    stream = response.extensions["network_stream"]
    return int(stream.get_extra_info("client_addr")[1])


def test_a_500_is_answered_with_a_request_id_and_the_connection_survives(
    tmp_path: Path, model_dir: Path
) -> None:
    env = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(tmp_path / "var"),
        "GATEWAY_MODEL_DIR": str(model_dir),
        "GATEWAY_PROMPT_ENCODER_BACKEND": "torch",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO),
    }
    port = _free_port()
    log = tmp_path / "serve.log"
    command = ["-m", "uvicorn", "tests.serve_with_fault:app", "--factory", "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, *command, "--timeout-keep-alive", "30"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        with httpx.Client(base_url=url, limits=limits, timeout=30) as client:
            first = client.get("/healthz")
            assert first.status_code == 200 and first.headers["x-request-id"].startswith("req_")
            port_before = _local_port(first)

            bug = client.get("/test/bug", headers={"X-Request-ID": "trace-42.a:b"})
            assert bug.status_code == 500
            assert bug.headers["x-request-id"] == "trace-42.a:b"  # a sane one is honoured
            err = bug.json()["error"]
            assert err["code"] == "internal_error" and err["type"] == "server_error"
            assert err["request_id"] == "trace-42.a:b"
            assert set(err) >= {"code", "message", "type", "param"}

            after = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
            assert after.status_code == 200
            assert _local_port(after) == _local_port(bug) == port_before  # the same connection
            assert after.headers["x-request-id"].startswith("req_")  # an insane one is replaced
    finally:
        proc.terminate()
        proc.wait(20)
    out = log.read_text()
    assert "unhandled KeyError in GET /test/bug (request trace-42.a:b)" in out
    assert SECRET not in out  # the message (it may quote a prompt) is not logged
    assert "Exception in ASGI application" not in out  # nothing escaped to the server
