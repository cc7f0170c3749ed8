"""No decision is left open by a database fault, and no image leaves without its decision.

Real faults on the real database (tests/db_faults.py): SQLite locked past its busy timeout
by another connection, PostgreSQL refusing and killing connections. The gateway retries
the decision write with backoff; if the database stays down the client gets 503
``audit_unavailable`` with ``Retry-After`` and no image, and the replica's reconciler closes
the decision as ``failed`` with the reason once the database is back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from gateway.app import create_app
from gateway.auth.keys import authenticate, create_key
from gateway.db.engine import unit_of_work
from gateway.db.models import Decision
from gateway.domain import Role
from gateway.errors import GatewayError
from gateway.pipeline.generate import GenerationPipeline
from gateway.pipeline.request import GenerationRequest
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.conftest import auth
from tests.db_faults import DatabaseFault
from tests.prom import scrape, value

BODY = {"model": "demo-tiny", "prompt": "a lighthouse at dusk", "size": "64x64", "steps": 2}
FAULTY = {  # short windows so that a few seconds of fault outlast them
    "sqlite_busy_timeout_s": 0.2,
    "audit_retry_s": 1.0,
    "audit_retry_backoff_s": 0.05,
    "reconcile_interval_s": 0.2,
    "queue_size": 64,
}


def _runtime(
    runtime_factory: Callable[..., Runtime], settings_factory: Callable[..., Settings], **kw: Any
) -> Runtime:
    return runtime_factory(settings_factory(**(FAULTY | kw)))


def _keys(runtime: Runtime) -> tuple[str, str]:
    with unit_of_work(runtime.sessions) as session:
        requester = create_key(session, tenant="acme", roles=[Role.REQUESTER]).secret
        auditor = create_key(session, tenant="acme", roles=[Role.AUDITOR]).secret
    return requester, auditor


def _decisions(runtime: Runtime) -> dict[str, Decision]:
    with runtime.sessions() as session:
        return {d.id: d for d in session.scalars(select(Decision))}


def _wait_all_closed(runtime: Runtime, within_s: float) -> dict[str, Decision]:
    deadline = time.monotonic() + within_s
    left: list[str] | str = "the database never answered"
    while time.monotonic() < deadline:
        try:
            decisions = _decisions(runtime)
        except OperationalError:  # the fault is still on
            time.sleep(0.1)
            continue
        left = [d.id for d in decisions.values() if d.status == "open"]
        if not left:
            return decisions
        time.sleep(0.1)
    raise AssertionError(f"still open after {within_s} s: {left}")


def _fault_during_generation(runtime: Runtime, fault: DatabaseFault, seconds: float) -> list[float]:
    """The database breaks as the (real) generator first finishes: the close meets the fault.

    Returns a list that receives the monotonic time the fault began.
    """
    loaded = runtime.models.get("demo-tiny")
    generate = loaded.pipeline
    began: list[float] = []

    def generate_then_break(**kwargs: Any) -> Any:
        out = generate(**kwargs)
        if not began:
            began.append(time.monotonic())
            fault.for_seconds(seconds)
        return out

    object.__setattr__(loaded, "pipeline", generate_then_break)
    return began


def test_close_outlasting_the_retries_is_503_then_reconciled_as_failed(
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
    database_url: str,
) -> None:
    runtime = _runtime(runtime_factory, settings_factory, retry_after_s=7)
    requester, _ = _keys(runtime)
    fault = DatabaseFault(database_url)
    began = _fault_during_generation(runtime, fault, seconds=2.5)  # > the 1 s of retries
    client = TestClient(create_app(runtime.settings, runtime))
    r = client.post("/v1/images/generations", json=BODY, headers=auth(requester))
    assert r.status_code == 503, r.text
    assert time.monotonic() - began[0] < 2.5  # answered after the retries, before the heal
    assert r.headers["retry-after"] == "7"
    body = r.json()
    assert "data" not in body  # no image without its decision committed
    err = body["error"]
    assert err["code"] == "audit_unavailable" and err["type"] == "server_error"
    assert set(err) >= {"code", "message", "type", "param", "decision_id"}
    decision_id = err["decision_id"]

    # the fault heals 2.5 s after it began; the reconciler closes the decision soon after
    decisions = _wait_all_closed(runtime, within_s=8)
    row = decisions[decision_id]
    assert row.outcome == "failed" and row.http_status == 503
    assert row.error_code == "audit_unavailable"
    record = row.record or {}
    assert record["intended"] == {"outcome": "allowed", "http_status": 200, "error_code": None}
    reason = record["errors"][-1]
    assert reason["stage"] == "audit"
    expected = "database is locked" if database_url.startswith("sqlite") else "psycopg."
    assert expected in reason["message"], reason
    assert "lighthouse" not in reason["message"]  # the SQL parameters are not recorded
    assert record["images"][0]["action"] == "allow"  # what was judged, though not delivered
    assert runtime.reconciler is not None and runtime.reconciler.closed == 1

    # the same replica serves again, and the trail still verifies
    r = client.post("/v1/images/generations", json=BODY, headers=auth(requester))
    assert r.status_code == 200, r.text
    _, auditor = _keys(runtime)
    verify = client.get("/v1/audit/verify", headers=auth(auditor))
    assert verify.status_code == 200 and verify.json()["ok"], verify.text

    # each decision counted once, when it closed: the reconciled one as failed
    samples = scrape(client.get("/metrics").text)
    assert value(samples, "gateway_decisions_total", outcome="failed") == 1
    assert value(samples, "gateway_decisions_total", outcome="allowed") == 1
    assert value(samples, "gateway_stage_duration_seconds_count", stage="generator") == 2
    assert value(samples, "gateway_stage_duration_seconds_count", stage="audit_write") == 1


def test_a_short_fault_is_ridden_out_by_the_retries(
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
    database_url: str,
) -> None:
    runtime = _runtime(runtime_factory, settings_factory, audit_retry_s=4.0)
    requester, _ = _keys(runtime)
    fault = DatabaseFault(database_url)
    _fault_during_generation(runtime, fault, seconds=0.8)
    client = TestClient(create_app(runtime.settings, runtime))
    r = client.post("/v1/images/generations", json=BODY, headers=auth(requester))
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["b64_json"]
    assert runtime.decisions.retries >= 1  # it did meet the fault
    (row,) = _decisions(runtime).values()
    assert row.status == "closed" and row.outcome == "allowed"


def test_opening_while_the_database_is_down_is_503_audit_unavailable(
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
    database_url: str,
) -> None:
    runtime = _runtime(runtime_factory, settings_factory)
    requester, _ = _keys(runtime)
    with unit_of_work(runtime.sessions) as session:
        principal = authenticate(session, requester)
    assert principal is not None
    fault = DatabaseFault(database_url)
    fault.on()
    try:
        # through the pipeline: the decision cannot be opened, nothing runs
        with pytest.raises(GatewayError) as caught:
            GenerationPipeline.of(runtime).generate(
                principal, GenerationRequest(model="demo-tiny", prompt="a lighthouse", steps=2)
            )
        assert caught.value.status == 503 and caught.value.code == "audit_unavailable"
        assert caught.value.headers["Retry-After"] == str(runtime.settings.retry_after_s)
        assert caught.value.decision_id is None
        # through HTTP: the key cannot even be checked; still 503 with Retry-After, not 500
        client = TestClient(create_app(runtime.settings, runtime))
        r = client.post("/v1/images/generations", json=BODY, headers=auth(requester))
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "database_unavailable"
        assert r.headers["retry-after"] == str(runtime.settings.retry_after_s)
    finally:
        fault.off()
    assert _wait_all_closed(runtime, within_s=5) == {}  # nothing was opened


def test_many_requests_across_a_fault_none_500_none_left_open(
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
    database_url: str,
) -> None:
    runtime = _runtime(runtime_factory, settings_factory)
    requester, _ = _keys(runtime)
    client = TestClient(create_app(runtime.settings, runtime))
    fault = DatabaseFault(database_url)
    answers: list[tuple[int, dict[str, Any]]] = []
    lock = threading.Lock()

    def call() -> None:
        for _ in range(4):
            r = client.post("/v1/images/generations", json=BODY, headers=auth(requester))
            with lock:
                answers.append((r.status_code, r.json()))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    healer = fault.for_seconds(2.0)
    for t in threads:
        t.join(120)
    healer.join(10)

    assert len(answers) == 32
    statuses = {status for status, _ in answers}
    assert statuses <= {200, 503}, answers
    failed_closes = set()
    for status, body in answers:
        if status == 200:
            assert body["data"][0]["b64_json"]
        else:
            assert "data" not in body
            err = body["error"]
            assert err["code"] in ("audit_unavailable", "database_unavailable")
            if err.get("decision_id"):
                failed_closes.add(err["decision_id"])
    decisions = _wait_all_closed(runtime, within_s=8)
    delivered = {b["governance"]["decision_id"] for s, b in answers if s == 200}
    for decision_id in delivered:  # every delivered image has its decision committed
        assert decisions[decision_id].outcome == "allowed"
    for decision_id in failed_closes:
        assert decisions[decision_id].outcome == "failed"
        assert (decisions[decision_id].record or {})["errors"][-1]["stage"] == "audit"
    others = set(decisions) - delivered - failed_closes  # opened, answer lost in the fault
    assert all(decisions[d].outcome == "failed" for d in others)
