"""Group commit of decisions, the cached audit head, and two OS processes sharing the trail."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import NoResultFound

from gateway.audit.decisions import DecisionAlreadyClosed, Opening, close_decision, open_decision
from gateway.audit.events import AuditLog, chain_hash
from gateway.audit.signing import Signer
from gateway.audit.verify import verify_trail
from gateway.audit.writer import _Close, _Open
from gateway.db.engine import make_engine, make_session_factory, unit_of_work
from gateway.db.migrate import upgrade
from gateway.db.models import AuditCheckpoint, AuditEvent, Decision, PersonalData, Tenant
from gateway.runtime import Runtime
from tests.audit import append_worker
from tests.conftest import REPO


def _tenant(runtime: Runtime) -> None:
    with unit_of_work(runtime.sessions) as session:
        session.add(Tenant(id="t1", name="t1", facts={}, created_at=datetime.now(UTC)))


def _opening(i: int) -> Opening:
    return Opening(
        tenant_id="t1",
        key_id="k",
        instance_id="i",
        user=f"user{i}",
        model_id="demo-tiny",
        licence_id="apache-2.0",
        intended_use="research",
        policy_version="0" * 64,
        request={"prompt": f"prompt {i}", "user": f"user{i}"},
    )


def _assert_chain(runtime: Runtime, size: int) -> None:
    with runtime.sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        report = verify_trail(session, runtime.audit.signer.public_key_b64)
    assert [e.seq for e in events] == list(range(1, size + 1))
    prev = "0" * 64
    for event in events:
        assert event.prev_hash == prev
        assert event.chain_hash == chain_hash(event.seq, prev, event.payload)
        prev = event.chain_hash
    assert report.ok, report.summary


def test_concurrent_requests_share_commits_and_the_trail_stays_whole(runtime: Runtime) -> None:
    _tenant(runtime)
    writer = runtime.decisions
    errors: list[BaseException] = []
    start = threading.Barrier(12)

    def request(n: int) -> None:
        try:
            start.wait()
            for i in range(10):
                decision_id = writer.open(_opening(100 * n + i))
                with runtime.sessions() as session:  # committed before open() returned
                    assert session.get(Decision, decision_id) is not None
                writer.close(
                    decision_id,
                    outcome="allowed",
                    http_status=200,
                    error_code=None,
                    record={"prompt": {"text": f"prompt {i}"}, "images": []},
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert writer.writes == 240 and writer.batches <= 240
    _assert_chain(runtime, 240)
    with runtime.sessions() as session:
        decisions = session.scalars(select(Decision)).all()
        assert len(decisions) == 120
        assert {d.status for d in decisions} == {"closed"}
        kinds = session.execute(
            select(AuditEvent.decision_id, func.count()).group_by(AuditEvent.decision_id)
        ).all()
        assert {count for _, count in kinds} == {2}
        # prompts and user ids live outside the hashes, as on the per-transaction path
        personal = session.scalars(select(PersonalData.field).distinct()).all()
        assert set(personal) == {
            "received.request.prompt",
            "received.request.user",
            "received.user",
            "decided.record.prompt.text",
        }


def test_one_refused_write_does_not_fail_its_batch(runtime: Runtime) -> None:
    _tenant(runtime)
    writer = runtime.decisions
    closed = writer.open(_opening(1))
    writer.close(closed, outcome="allowed", http_status=200, error_code=None, record={})
    still_open = writer.open(_opening(2))
    batch = [
        _Close(still_open, "allowed", 200, None, {}),
        _Close(closed, "allowed", 200, None, {}),  # already closed
        _Close(still_open, "aborted", 0, "aborted", {}),  # a second close in the same batch
        _Close("dec_missing", "allowed", 200, None, {}),
        _Open(_opening(3)),
    ]
    writer._write(list(batch))
    assert all(job.done for job in batch)
    assert batch[0].error is None and batch[4].error is None
    assert isinstance(batch[1].error, DecisionAlreadyClosed)
    assert isinstance(batch[2].error, DecisionAlreadyClosed)
    assert isinstance(batch[3].error, NoResultFound)
    with runtime.sessions() as session:
        row = session.get(Decision, still_open)
        assert row is not None and row.outcome == "allowed"
    _assert_chain(runtime, 5)
    with pytest.raises(DecisionAlreadyClosed):
        writer.close(closed, outcome="allowed", http_status=200, error_code=None, record={})
    with pytest.raises(ValueError, match="unknown outcome"):
        writer.close(still_open, outcome="maybe", http_status=200, error_code=None, record={})


def test_a_failed_batch_is_retried_write_by_write(runtime: Runtime) -> None:
    _tenant(runtime)
    writer = runtime.decisions
    good = _Open(_opening(1))
    bad = _Open(_opening(2))
    bad.opening = dataclasses.replace(bad.opening, tenant_id="no-such-tenant")  # FK refuses it
    writer._write([good, bad])
    assert good.error is None
    assert bad.error is not None  # the caller sees the database's refusal: fail closed
    _assert_chain(runtime, 1)


def test_the_cached_head_is_reloaded_when_another_writer_appended(runtime: Runtime) -> None:
    other = AuditLog(runtime.audit.signer, runtime.settings.checkpoint_every)
    for i in range(3):
        with unit_of_work(runtime.sessions) as session:
            runtime.audit.append(session, "test", {"i": i})
        reloads = runtime.audit._cache.reloads
        with unit_of_work(runtime.sessions) as session:
            runtime.audit.append(session, "test", {"again": i})
        assert runtime.audit._cache.reloads == reloads  # nobody else wrote: cache used
        with unit_of_work(runtime.sessions) as session:
            other.append(session, "other", {"i": i})  # another process, in effect
    # a rolled-back append leaves the cache ahead of the database: it must not be trusted
    with pytest.raises(RuntimeError), unit_of_work(runtime.sessions) as session:
        runtime.audit.append(session, "test", {"rolled": "back"})
        raise RuntimeError("the caller's transaction fails")
    with unit_of_work(runtime.sessions) as session:
        runtime.audit.append(session, "test", {"after": "rollback"})
    _assert_chain(runtime, 10)


@pytest.mark.timeout(600)
def test_two_processes_appending_concurrently_keep_the_trail_gapless(
    database_url: str, tmp_path: Path
) -> None:
    upgrade(database_url, REPO / "migrations")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            insert(Tenant),
            [{"id": "t1", "name": "t1", "facts": {}, "created_at": datetime.now(UTC)}],
        )
    go = tmp_path / "go"
    per_process = 150
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.audit.append_worker",
                database_url,
                name,
                str(per_process),
                "6",
                str(go),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("proc-a", "proc-b")
    ]
    deadline = time.monotonic() + 120
    while not all(Path(f"{go}.{n}.ready").exists() for n in ("proc-a", "proc-b")):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.02)
    go.touch()
    outputs = [p.communicate(timeout=500) for p in procs]
    summaries = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        summaries.append(json.loads(out.strip().splitlines()[-1]))
        assert summaries[-1]["writes"] == 2 * per_process
    a, b = summaries
    assert a["started"] < b["ended"] and b["started"] < a["ended"], "they did not overlap"
    notes = 2 * (per_process // 10)
    size = 4 * per_process + notes
    signer = Signer.from_seed_b64(append_worker.SEED)
    with unit_of_work(make_session_factory(engine)) as session:
        seqs = session.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)).all()
        assert seqs == list(range(1, size + 1))  # gapless, no duplicates
        instances = session.scalars(
            select(Decision.instance_id)
            .join(AuditEvent, AuditEvent.decision_id == Decision.id)
            .order_by(AuditEvent.seq)
        ).all()
        switches = sum(x != y for x, y in itertools.pairwise(instances))
        if engine.dialect.name == "postgresql":  # SQLite's busy handler need not be fair
            assert switches > 4, "the two processes did not interleave"
        checkpoints = session.scalars(select(AuditCheckpoint.size)).all()
        assert sorted(checkpoints) == list(
            range(append_worker.CHECKPOINT_EVERY, size + 1, append_worker.CHECKPOINT_EVERY)
        )
        report = verify_trail(session, signer.public_key_b64)
        assert report.ok, report.summary
        assert report.checkpoints_checked == len(checkpoints)
    engine.dispose()


def test_batched_rows_equal_the_per_transaction_ones(runtime: Runtime) -> None:
    """The writer's multi-row paths (COPY and one UPDATE on PostgreSQL) store what the ORM does."""
    _tenant(runtime)
    record = {
        "prompt": {"text": "a fox", "normalised": "a fox", "assessment": {"flagged": ["hate"]}},
        "images": [{"assessment": {"flagged": ["violence"]}}],
        "note": 'quotes " and \\ and ünïcode',
    }
    opens = [_Open(_opening(i)) for i in range(3)]
    runtime.decisions._write(list(opens))
    closes = [_Close(j.decision_id, "prompt_blocked", 400, "content_policy", record) for j in opens]
    runtime.decisions._write(list(closes))
    assert all(j.error is None for j in opens + closes)
    with unit_of_work(runtime.sessions) as session:
        reference = open_decision(session, runtime.audit, _opening(9))
    with unit_of_work(runtime.sessions) as session:
        close_decision(
            session,
            runtime.audit,
            reference.id,
            outcome="prompt_blocked",
            http_status=400,
            error_code="content_policy",
            record=record,
        )
    with runtime.sessions() as session:
        rows = session.scalars(select(Decision).order_by(Decision.created_at)).all()
        fields = [
            (d.status, d.outcome, d.http_status, d.error_code, d.record, d.categories, d.user)
            for d in rows
        ]
        assert all(d.closed_at is not None and d.created_at is not None for d in rows)
        personal = session.execute(
            select(PersonalData.decision_id, PersonalData.field, PersonalData.value)
        ).all()
    assert len(rows) == 4
    assert (
        fields[0][:6]
        == fields[3][:6]
        == (
            "closed",
            "prompt_blocked",
            400,
            "content_policy",
            record,
            ",hate,violence,",
        )
    )
    assert {f for _, f, _ in personal if _ == opens[0].decision_id} == {
        f for _, f, _ in personal if _ == reference.id
    }
    _assert_chain(runtime, 8)


def test_a_retried_write_whose_commit_happened_is_not_written_twice(runtime: Runtime) -> None:
    """The connection can die after the server committed: the retry must recognise it."""
    _tenant(runtime)
    writer = runtime.decisions
    opened = _Open(_opening(1))
    writer._write([opened])
    assert opened.error is None
    again = _Open(_opening(1))
    again.decision_id, again.retried = opened.decision_id, True  # same write, tried again
    writer._write([again])
    assert again.error is None  # not a duplicate key: it was recognised as committed
    close = _Close(opened.decision_id, "allowed", 200, None, {})
    writer._write([close])
    close_again = _Close(opened.decision_id, "allowed", 200, None, {})
    close_again.retried = True
    writer._write([close_again])
    assert close.error is None and close_again.error is None
    _assert_chain(runtime, 2)  # one received, one decided


def test_the_reconciler_closes_only_this_replicas_idle_open_decisions(runtime: Runtime) -> None:
    _tenant(runtime)
    me = runtime.settings.instance_id
    assert runtime.reconciler is not None
    writer = runtime.decisions
    mine_in_flight = writer.open(dataclasses.replace(_opening(1), instance_id=me))
    with unit_of_work(runtime.sessions) as session:  # left open by a request that vanished
        orphan = open_decision(
            session, runtime.audit, dataclasses.replace(_opening(2), instance_id=me)
        ).id
        other = open_decision(  # another replica's: it may still be running
            session, runtime.audit, dataclasses.replace(_opening(3), instance_id="other")
        ).id
    deadline = time.monotonic() + 10
    while runtime.reconciler.closed < 1:
        runtime.reconciler.run_once()
        assert time.monotonic() < deadline
    with runtime.sessions() as session:
        rows = {d.id: d for d in session.scalars(select(Decision))}
    assert rows[orphan].status == "closed" and rows[orphan].outcome == "failed"
    assert rows[orphan].http_status == 0 and rows[orphan].error_code == "failed"
    assert "no request in flight" in (rows[orphan].record or {})["errors"][-1]["message"]
    assert rows[mine_in_flight].status == "open"  # its request is still working on it
    assert rows[other].status == "open"
    writer.close(mine_in_flight, outcome="allowed", http_status=200, error_code=None, record={})
    assert writer.in_flight() == set() and writer.stuck() == {}
