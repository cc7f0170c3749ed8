"""A whole `gateway serve` run with GATEWAY_LOG_FORMAT=json: every line parses, none holds a secret.

The run makes requests carrying a known prompt, API keys and a console session cookie, then
stops the server; every line it wrote to stdout and stderr (start-up included) must be one
JSON object with time, level, logger and message, and none may contain those secrets.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_serve_process import REPO, Server, _free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PROMPT = "a quokka-zephyr-4417 reading by a lighthouse"
BLOCKED = "gore quokka-zephyr-4417 everywhere"
FORGED = "gk_0000deadbeef_forgedSecretValue1234567890abcdefghij"
FIELDS = {"time", "level", "logger", "message"}


class SlowServer(Server):
    """``Server`` with room for a first start's ONNX export on a busy machine."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.port, self.log = port, log
        cmd = [sys.executable, "-m", "gateway", "serve", "--port", str(port)]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, cwd=REPO)
        deadline = time.monotonic() + 600
        while not any('"message": "ready: ' in line for line in log.read_text().splitlines()):
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)


def _console_cookie(url: str, key: str) -> str:
    with httpx.Client(base_url=url, follow_redirects=False) as c:
        page = c.get("/console/login")
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match, page.text
        r = c.post("/console/login", data={"api_key": key, "csrf_token": match.group(1)})
        assert r.status_code == 303, r.text
        cookie = c.cookies.get("gw_console")
        assert cookie
        assert c.get("/console/").status_code == 200
        return str(cookie)


def test_json_log_of_a_whole_run_parses_and_holds_no_secret(
    tmp_path: Path, model_dir: Path
) -> None:
    data = tmp_path / "var"
    env = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(data),
        "GATEWAY_MODEL_DIR": str(model_dir),
        "GATEWAY_LOG_FORMAT": "json",
        "GATEWAY_CONSOLE_COOKIE_SECURE": "false",
        "HF_HUB_OFFLINE": "1",
    }
    log = tmp_path / "serve.log"
    port = _free_port()
    server = SlowServer(env, port, log)
    request_ids: list[str] = []
    try:
        admin = (data / "bootstrap-admin-key").read_text().strip()
        made = httpx.post(
            f"{server.url}/v1/admin/keys",
            json={"tenant": "acme", "roles": ["requester"]},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert made.status_code == 201, made.text
        requester = made.json()["key"]
        headers = {"Authorization": f"Bearer {requester}"}
        bodies = [
            {"model": "demo-tiny", "prompt": PROMPT, "size": "64x64", "steps": 2},
            {"model": "demo-tiny", "prompt": BLOCKED, "size": "64x64", "steps": 2},
            {"model": "demo-tiny", "prompt": PROMPT, "size": "65x65", "steps": 2},
            {"model": "no-such-model", "prompt": PROMPT},
        ]
        statuses, answers = [], []
        for body in bodies:
            r = httpx.post(
                f"{server.url}/v1/images/generations", json=body, headers=headers, timeout=120
            )
            statuses.append(r.status_code)
            answers.append(r)
            if "x-request-id" in r.headers:
                request_ids.append(r.headers["x-request-id"])
        assert statuses[0] == 200 and statuses[1] != 200 and statuses[2] == 422
        allowed = answers[0]
        allowed_ids = (allowed.headers["x-request-id"], allowed.json()["governance"]["decision_id"])
        blocked_decision = answers[1].json()["error"]["decision_id"]
        scraped = httpx.get(f"{server.url}/metrics")
        assert scraped.status_code == 200
        assert 'gateway_decisions_total{outcome="allowed"} 1.0' in scraped.text
        assert PROMPT not in scraped.text and requester not in scraped.text
        forged = httpx.post(
            f"{server.url}/v1/images/generations",
            json=bodies[0],
            headers={"Authorization": f"Bearer {FORGED}"},
        )
        assert forged.status_code == 401
        leaky = httpx.get(f"{server.url}/healthz", params={"api_key": admin, "prompt": PROMPT})
        assert leaky.status_code == 200
        cookie = _console_cookie(server.url, admin)
    finally:
        server.stop()

    text = log.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    records = []
    for line in lines:
        record = json.loads(line)  # every line is one JSON object
        assert isinstance(record, dict) and set(record) >= FIELDS, line
        records.append(record)

    for secret in (PROMPT, "quokka-zephyr-4417", admin, requester, cookie, FORGED):
        assert secret not in text
    for key in (admin, requester, FORGED):
        assert key.split("_", 2)[2] not in text  # not even the secret part alone

    messages = [r["message"] for r in records]
    ready = [m for m in messages if m.startswith("ready: ")]
    assert len(ready) == 1, messages
    assert f"listening on http://127.0.0.1:{port}" in ready[0]
    assert "models: 1 ready (demo-tiny), 15 unavailable" in ready[0]
    assert str((data / "bootstrap-admin-key").resolve()) in ready[0]
    start = messages[: messages.index(ready[0])]
    loud = [r for r in records[: len(start)] if r["level"] != "INFO"]
    assert not loud, loud  # no library warning, TracerWarning or "model unavailable" line
    assert len(start) < 20, start
    access = [r for r in records if r["logger"] == "gateway.access"]
    assert any(r["path"] == "/healthz" and r["status"] == 200 for r in access)
    assert any(r["status"] == 401 for r in access)
    for request_id in request_ids:  # once the app answers with X-Request-ID
        assert any(r.get("request_id") == request_id for r in access), request_id
    # each decision's line names it and the request it served (the access line cannot know it)
    closed = {r.get("decision_id"): r for r in records if r["logger"] == "gateway.decisions"}
    request_id, decision_id = allowed_ids
    assert closed[decision_id]["outcome"] == "allowed"
    assert closed[decision_id]["request_id"] == request_id
    assert closed[blocked_decision]["outcome"] == "prompt_blocked"
    assert messages[-1] == "stopped"
