"""`gateway serve` as a real process: first start, then kill -9 mid-request and restart."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from gateway.db.engine import make_engine, make_session_factory
from gateway.db.models import Decision

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        deadline = time.monotonic() + 300  # a first start exports MiniLM to ONNX
        while True:
            assert self.proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


def _decisions(url: str) -> list[Decision]:
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            return list(session.scalars(select(Decision)).all())
    finally:
        engine.dispose()


def test_first_start_then_crash_leaves_no_decision_open(
    tmp_path: Path, database_url: str, model_dir: Path
) -> None:
    data = tmp_path / "var"
    env = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(data),
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_MODEL_DIR": str(model_dir),
        "HF_HUB_OFFLINE": "1",
    }
    log = tmp_path / "serve.log"
    server = Server(env, _free_port(), log)
    try:
        out = log.read_text()
        key_file = data / "bootstrap-admin-key"
        key = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert "listening on http://127.0.0.1:" in out and str(key_file.resolve()) in out
        assert key not in out  # the log says where the key is, never the key
        headers = {"Authorization": f"Bearer {key}"}
        body = {
            "model": "demo-tiny",
            "prompt": "a slow lighthouse",
            "size": "128x128",
            "steps": 50,
            "n": 4,
        }
        responses: list[int] = []

        def call() -> None:
            try:
                r = httpx.post(
                    f"{server.url}/v1/images/generations", json=body, headers=headers, timeout=120
                )
                responses.append(r.status_code)
            except httpx.HTTPError:
                responses.append(-1)

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while not any(d.status == "open" for d in _decisions(database_url)):
            assert time.monotonic() < deadline, "no decision was ever open"
            time.sleep(0.05)
        server.kill()
        for t in threads:
            t.join(30)
    finally:
        server.stop()
    left_open = [d.id for d in _decisions(database_url) if d.status == "open"]
    assert left_open, "the kill should have left at least one decision open"

    restarted = Server(env, _free_port(), log)
    try:
        assert log.read_text().count("first start: created an admin API key") == 1
        assert f"closed {len(left_open)} decision(s) left open as aborted" in log.read_text()
        after = {d.id: d for d in _decisions(database_url)}
        assert all(d.status == "closed" for d in after.values())
        for decision_id in left_open:
            assert after[decision_id].outcome == "aborted"
        r = httpx.get(
            f"{restarted.url}/v1/audit/decisions/{left_open[0]}",
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200 and r.json()["outcome"] == "aborted"
    finally:
        restarted.stop()


def test_missing_prompt_head_starts_but_is_not_ready_and_refuses(
    tmp_path: Path, database_url: str, model_dir: Path
) -> None:
    data = tmp_path / "var"
    missing = tmp_path / "prompt_head.npz"  # as if the shipped head had been deleted
    env = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(data),
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_MODEL_DIR": str(model_dir),
        "GATEWAY_PROMPT_HEAD": str(missing),
        "GATEWAY_PROMPT_ENCODER_BACKEND": "torch",  # no ONNX export needed for this test
        "HF_HUB_OFFLINE": "1",
    }
    log = tmp_path / "serve.log"
    server = Server(env, _free_port(), log)
    try:
        assert f"prompt_head: {missing} is missing" in log.read_text()
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["artefacts"]["prompt_head"] == {"error": f"{missing} is missing"}
        assert "prompt_head" in checks["safety"]["prompt_classifier"]
        key = (data / "bootstrap-admin-key").read_text().strip()
        headers = {"Authorization": f"Bearer {key}"}
        body = {
            "model": "demo-tiny",
            "prompt": "a soldier executing prisoners, war photography",
            "size": "64x64",
            "steps": 2,
        }
        r = httpx.post(
            f"{server.url}/v1/images/generations", json=body, headers=headers, timeout=60
        )
        assert r.status_code == 503, r.text
        assert "data" not in r.json()
        err = r.json()["error"]
        assert err["code"] == "safety_system_unavailable"
        record = httpx.get(
            f"{server.url}/v1/audit/decisions/{err['decision_id']}", headers=headers, timeout=10
        ).json()
        assert record["outcome"] == "safety_system_unavailable"
        assert record["errors"][0]["stage"] == "prompt_classifier"
        assert "prompt_head" in record["errors"][0]["message"]
        r = httpx.post(
            f"{server.url}/v1/moderations",
            json={"input": body["prompt"]},
            headers=headers,
            timeout=60,
        )
        assert r.status_code == 503 and r.json()["error"]["code"] == "safety_system_unavailable"
    finally:
        server.stop()
    decisions = _decisions(database_url)
    assert [d.outcome for d in decisions] == ["safety_system_unavailable"]
