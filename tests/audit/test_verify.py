"""Tamper tests: change the trail the way an administrator could, and see verify catch it.

Each test drops the append-only guard first (as the table owner can), edits the database
directly, then runs the verifier: it must fail and name the first sequence that fails.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from gateway.app import create_app
from gateway.audit.canonical import canonical_json
from gateway.audit.erase import erase_user
from gateway.audit.events import chain_hash
from gateway.audit.signing import Signer
from gateway.audit.verify import VerifyReport, verify_trail
from gateway.auth.keys import create_key
from gateway.db.engine import unit_of_work
from gateway.domain import Role
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.conftest import auth

BODY = {"model": "demo-tiny", "prompt": "a lighthouse at dusk", "size": "64x64", "steps": 1}


@pytest.fixture
def trail(
    runtime_factory: Callable[..., Runtime], settings_factory: Callable[..., Settings]
) -> Runtime:
    """12 events with a signed checkpoint every 5 (at 5 and 10)."""
    runtime = runtime_factory(settings_factory(checkpoint_every=5))
    with unit_of_work(runtime.sessions) as session:
        for i in range(12):
            runtime.audit.append(session, "test", {"i": i, "prompt": f"prompt {i}"})
    return runtime


def _verify(runtime: Runtime, **kwargs: bool) -> VerifyReport:
    with unit_of_work(runtime.sessions) as session:
        return verify_trail(session, runtime.audit.signer.public_key_b64, **kwargs)


Statement = str | tuple[str, dict[str, object]]


def _tamper(runtime: Runtime, *statements: Statement) -> None:
    with runtime.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER audit_events_no_update"))
            conn.execute(text("DROP TRIGGER audit_events_no_delete"))
        for statement in statements:
            sql, params = statement if isinstance(statement, tuple) else (statement, {})
            conn.execute(text(sql), params)


def test_intact_trail_verifies(trail: Runtime) -> None:
    report = _verify(trail)
    assert report.ok, report.summary
    assert report.size == 12 and report.events_checked == 12 and report.checkpoints_checked == 2
    assert report.checkpoint is not None and report.checkpoint["size"] == 10
    quick = _verify(trail, from_last_checkpoint=True)
    assert quick.ok and quick.started_at == 10 and quick.events_checked == 2


def test_edited_payload(trail: Runtime) -> None:
    _tamper(
        trail,
        "UPDATE audit_events SET payload = REPLACE(payload, 'prompt 2', 'prompt X') WHERE seq = 3",
    )
    report = _verify(trail)
    assert not report.ok and report.first_bad_seq == 3
    assert report.reason is not None and "payload changed" in report.reason


def test_deleted_row(trail: Runtime) -> None:
    _tamper(trail, "DELETE FROM audit_events WHERE seq = 4")
    report = _verify(trail)
    assert not report.ok and report.first_bad_seq == 4 and "row missing" in (report.reason or "")


def test_inserted_row(trail: Runtime) -> None:
    with trail.engine.connect() as conn:
        prev = conn.execute(text("SELECT chain_hash FROM audit_events WHERE seq = 5")).scalar_one()
    forged = canonical_json({"body": {"forged": True}, "seq": 6})
    _tamper(
        trail,
        *[f"UPDATE audit_events SET seq = {s + 1} WHERE seq = {s}" for s in range(12, 5, -1)],
        (
            "INSERT INTO audit_events (seq, kind, occurred_at, payload, prev_hash, chain_hash) "
            "VALUES (6, 'test', CURRENT_TIMESTAMP, :p, :prev, :hash)",
            {"p": forged, "prev": prev, "hash": chain_hash(6, prev, forged)},
        ),
    )
    report = _verify(trail)
    assert not report.ok and report.first_bad_seq == 7


def test_swapped_rows(trail: Runtime) -> None:
    _tamper(
        trail,
        "UPDATE audit_events SET seq = 100 WHERE seq = 7",
        "UPDATE audit_events SET seq = 7 WHERE seq = 8",
        "UPDATE audit_events SET seq = 8 WHERE seq = 100",
    )
    report = _verify(trail)
    assert not report.ok and report.first_bad_seq == 7 and "reordered" in (report.reason or "")


def test_rehashed_tail_is_caught_by_the_signed_checkpoint(trail: Runtime) -> None:
    with trail.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT seq, payload, prev_hash FROM audit_events ORDER BY seq")
        ).all()
    statements: list[Statement] = []
    head = "0" * 64
    for seq, payload, _ in rows:
        if seq == 3:
            payload = payload.replace("prompt 2", "prompt X")
            statements.append(
                ("UPDATE audit_events SET payload = :p WHERE seq = 3", {"p": payload})
            )
        new = chain_hash(seq, head, payload)
        statements.append(
            f"UPDATE audit_events SET prev_hash = '{head}', chain_hash = '{new}' WHERE seq = {seq}"
        )
        head = new
    statements.append(f"UPDATE audit_head SET chain_hash = '{head}'")
    _tamper(trail, *statements)
    report = _verify(trail)
    assert not report.ok and report.first_bad_seq == 1
    assert "history rewritten" in (report.reason or "") and "size 5" in (report.reason or "")


def test_truncated_below_checkpoint(trail: Runtime) -> None:
    _tamper(trail, "DELETE FROM audit_events WHERE seq >= 9")
    report = _verify(trail)
    assert not report.ok and "truncated" in (report.reason or "")


def test_wrong_key_is_a_bad_signature(trail: Runtime) -> None:
    other = Signer.from_seed_b64("A" * 43 + "=")
    with unit_of_work(trail.sessions) as session:
        report = verify_trail(session, other.public_key_b64)
    assert not report.ok and report.first_bad_seq == 5 and "bad signature" in (report.reason or "")


def test_verify_over_http_and_erasure_keeps_it_intact(
    runtime_factory: Callable[..., Runtime], settings_factory: Callable[..., Settings]
) -> None:
    runtime = runtime_factory(settings_factory(checkpoint_every=3))
    with unit_of_work(runtime.sessions) as session:
        key = create_key(session, tenant="acme", roles=[Role.REQUESTER, Role.AUDITOR]).secret
    client = TestClient(create_app(runtime.settings, runtime))
    ids = []
    for user in ("alice", "bob", "alice"):
        r = client.post("/v1/images/generations", json={**BODY, "user": user}, headers=auth(key))
        ids.append(r.json()["governance"]["decision_id"])
    with runtime.engine.connect() as conn:
        payloads = conn.execute(text("SELECT payload FROM audit_events")).scalars().all()
    assert not any("lighthouse" in p or "alice" in p for p in payloads)  # only commitments
    assert client.get("/v1/audit/verify", headers=auth(key)).json()["ok"] is True
    with unit_of_work(runtime.sessions) as session:
        erased = erase_user(session, runtime.audit, "alice")
    assert sorted(erased) == sorted([ids[0], ids[2]])
    record = client.get(f"/v1/audit/decisions/{ids[0]}", headers=auth(key)).json()
    assert record["request"]["prompt"] == "[erased]" and record["prompt"]["text"] == "[erased]"
    assert record["user"] is None
    kept = client.get(f"/v1/audit/decisions/{ids[1]}", headers=auth(key)).json()
    assert kept["request"]["prompt"] == "a lighthouse at dusk"
    with runtime.engine.connect() as conn:
        left = conn.execute(text("SELECT decision_id FROM personal_data")).scalars().all()
    assert set(left) == {ids[1]}
    report = client.get("/v1/audit/verify", headers=auth(key)).json()
    assert report["ok"] is True, report["summary"]
    requester_only = make_requester(runtime)
    assert client.get("/v1/audit/verify", headers=auth(requester_only)).status_code == 403


def make_requester(runtime: Runtime) -> str:
    with unit_of_work(runtime.sessions) as session:
        return create_key(session, tenant="acme", roles=[Role.REQUESTER]).secret
