"""A client that disconnects while its job waits for the generator (issue 11).

Only a real connection can be closed, so these run the real app on a real uvicorn server and
talk to it over a raw socket. The model's owner thread is held busy, so the job is still
waiting when the client goes: it must leave the queue at once (not when the owner thread next
looks), never run, and its decision must be closed as ``cancelled`` (recorded 499).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from urllib.parse import urlparse

from sqlalchemy import select

from gateway.app import create_app
from gateway.db.models import Decision
from gateway.domain import Role
from gateway.runtime import Runtime
from tests.conftest import KeyFactory, hold_owner
from tests.console.live import serve

PROMPT = "a lighthouse at dusk whose client hung up"


def _until(condition: Callable[[], bool], within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _send(url: str, key: str, body: dict[str, object]) -> socket.socket:
    """A POST whose answer is never read."""
    data = json.dumps(body).encode()
    port = urlparse(url).port
    assert port is not None
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        "POST /v1/images/generations HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


def _decisions(runtime: Runtime) -> list[Decision]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Decision)))


def test_a_client_that_disconnects_leaves_the_queue_and_is_recorded_cancelled(
    runtime: Runtime, make_key: KeyFactory
) -> None:
    key = make_key(Role.REQUESTER)
    batcher = runtime.models.batcher("demo-tiny")
    body = {"model": "demo-tiny", "prompt": PROMPT, "size": "64x64", "steps": 2, "n": 2}
    with serve(create_app(runtime.settings, runtime)) as url:
        release = hold_owner(batcher, 60)
        try:
            sock = _send(url, key, body)
            _until(lambda: batcher.waiting_images() == 2)  # queued behind the busy owner
            sock.close()
            # off the queue while the owner thread is still busy: the bound is free at once
            _until(lambda: batcher.waiting_images() == 0, 10)
            _until(lambda: all(d.status == "closed" for d in _decisions(runtime)))
        finally:
            release.set()

        # the owner thread is free again: a request that stays connected still gets its images
        kept = _send(url, key, {**body, "prompt": "a lighthouse at dusk", "n": 1})
        with kept, kept.makefile("rb") as answer:
            assert answer.readline().startswith(b"HTTP/1.1 200"), "the next request was refused"

    decisions = _decisions(runtime)
    (gone,) = [d for d in decisions if d.request["prompt"] == PROMPT]
    assert (gone.status, gone.outcome, gone.http_status, gone.error_code) == (
        "closed",
        "cancelled",
        499,
        "client_disconnected",
    )
    record = gone.record or {}
    assert "batch" not in record and "generator" not in record["timings_ms"]  # it never ran
    assert "images" not in record
    (served,) = [d for d in decisions if d.request["prompt"] == "a lighthouse at dusk"]
    assert served.outcome == "allowed"
