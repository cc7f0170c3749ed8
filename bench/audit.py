"""Audit trail figures: chained appends, export of 1M decisions, verify of 1M events.

Aims (issue "Tamper-evident audit trail"): appends >= 1,000 decisions/s on SQLite and
>= 2,000/s on PostgreSQL; export of 1,000,000 decisions to CSV in <= 60 s with peak memory
<= 300 MB; verify of 1,000,000 events in <= 60 s.

- appends: each decision is written exactly as a request writes it (decision row + "received"
  event committed, then "decided" event + outcome committed: hash chain, Merkle frontier,
  Ed25519 checkpoints every 1000), by 1 and by 16 concurrent client threads (--clients).
  Three ways in the same run, on fresh databases: the gateway's path (DecisionWriter, group
  commit: concurrent writes share one transaction, each caller returns after its commit);
  the previous path (a transaction per write, open_decision/close_decision); and the baseline
  without the audit chain (the decision row only, a transaction per write). On SQLite with
  synchronous=FULL (the default, durable across power loss) and NORMAL.
- verify / export: the trail is bulk-filled with N synthetic decisions (2N chained events)
  through the same hashing code, then `verify_trail` and the CSV exporter run over it; the
  export runs in a child process so its peak RSS is its own. --rows sets N; below 1,000,000
  the time verdicts are scaled linearly (and say so).

    .venv/bin/python bench/audit.py [--database-url URL] [--appends 2000] [--clients 1,16]
                                    [--rows 1000000]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, text

from gateway.audit.canonical import canonical_json
from gateway.audit.decisions import (
    Opening,
    close_decision,
    closing_values,
    decided_event,
    decision_row,
    open_decision,
    received_event,
)
from gateway.audit.events import AuditLog, chain_hash, checkpoint_note, leaf_hash
from gateway.audit.merkle import Frontier
from gateway.audit.signing import Signer
from gateway.audit.verify import verify_trail
from gateway.audit.writer import DecisionWriter
from gateway.db.engine import make_engine, make_session_factory, unit_of_work
from gateway.db.migrate import upgrade
from gateway.db.models import AuditCheckpoint, AuditEvent, Decision, PersonalData, Tenant

REPO = Path(__file__).resolve().parent.parent
RECORD: dict[str, Any] = {
    "licence": {"id": "apache-2.0", "decision": "allow", "reasons": []},
    "rights": {"commercial_use": "allowed", "licence": {"id": "apache-2.0"}},
    "model": {"id": "demo-tiny", "weights_sha256": "ab" * 32},
    "prompt": {
        "text": "a lighthouse at dusk",
        "normalised": "a lighthouse at dusk",
        "assessment": {
            "flagged": [],
            "action": "allow",
            "category_scores": {"sexual": 0.01, "violence": 0.02},
        },
    },
    "images": [{"index": 0, "action": "allow", "sha256": "cd" * 32}],
    "timings_ms": {"prompt_classifier": 12.0, "generator": 150.0},
}


def _fresh_database(url: str | None, workdir: Path) -> str:
    if not url:
        return f"sqlite:///{workdir}.db"
    name = "gw_bench_" + uuid.uuid4().hex[:10]
    admin = make_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


def _opening(tenant_id: str, i: int) -> Opening:
    return Opening(
        tenant_id=tenant_id,
        key_id="bench",
        instance_id="bench",
        user=f"u{i % 50}",
        model_id="demo-tiny",
        licence_id="apache-2.0",
        intended_use="commercial",
        policy_version="f" * 64,
        request={"prompt": f"a lighthouse at dusk {i}", "n": 1, "size": "64x64"},
    )


def _run_clients(clients: int, n: int, one: Callable[[int], None]) -> float:
    """``n`` decisions written by ``clients`` threads (like a server's request threads)."""
    counter = itertools.count()
    errors: list[BaseException] = []

    def client() -> None:
        try:
            while (i := next(counter)) < n:
                one(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return n / elapsed


def bench_appends(url: str, n: int, clients: int, synchronous: str = "FULL") -> dict[str, float]:
    """Decisions/s, at ``clients`` concurrent requests, of three ways to write them."""
    engine = make_engine(url, sqlite_synchronous=synchronous)
    sessions = make_session_factory(engine)
    log = AuditLog(Signer.from_seed_b64("B" * 43 + "="), 1000)
    writer = DecisionWriter(engine, log)
    with unit_of_work(sessions) as s:
        if s.get(Tenant, "ten_bench") is None:
            s.add(Tenant(id="ten_bench", name="bench", facts={}, created_at=datetime.now(UTC)))

    def gateway_path(i: int) -> None:  # what GenerationPipeline does: group commit
        did = writer.open(_opening("ten_bench", i))
        writer.close(did, outcome="allowed", http_status=200, error_code=None, record=RECORD)

    def per_request(i: int) -> None:  # the previous path: a transaction per write
        with unit_of_work(sessions) as s:
            did = open_decision(s, log, _opening("ten_bench", i)).id
        with unit_of_work(sessions) as s:
            close_decision(
                s, log, did, outcome="allowed", http_status=200, error_code=None, record=RECORD
            )

    def no_chain(i: int) -> None:  # baseline: the same decision writes, no audit chain
        with unit_of_work(sessions) as s:
            did = "dec_" + uuid.uuid4().hex
            s.add(
                Decision(
                    id=did,
                    tenant_id="ten_bench",
                    key_id="no-chain",
                    instance_id="bench",
                    status="open",
                    model_id="demo-tiny",
                    policy_version="f" * 64,
                    created_at=datetime.now(UTC),
                    request=_opening("", i).request,
                )
            )
        with unit_of_work(sessions) as s:
            row = s.get(Decision, did)
            assert row is not None
            row.status, row.outcome, row.record = "closed", "allowed", RECORD

    figures = {
        "group_commit": _run_clients(clients, n, gateway_path),
        "per_request": _run_clients(clients, n, per_request),
        "no_chain": _run_clients(clients, n, no_chain),
    }
    figures["events_per_commit"] = writer.writes / max(writer.batches, 1)
    with unit_of_work(sessions) as s:  # the baseline's rows have no events: not audited
        s.execute(delete(Decision).where(Decision.key_id == "no-chain"))
    with unit_of_work(sessions) as s:
        report = verify_trail(s, log.signer.public_key_b64)
    if not report.ok:
        raise SystemExit(f"the benchmark's own trail does not verify: {report.summary}")
    engine.dispose()
    return figures


def bulk_fill(url: str, decisions: int, signer: Signer) -> float:
    """N synthetic decisions and 2N chained events, hashed by the gateway's own functions."""
    engine = make_engine(url)
    t0 = time.perf_counter()
    head, frontier, seq = "0" * 64, Frontier(), 0
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch_d: list[dict[str, Any]] = []
    batch_e: list[dict[str, Any]] = []
    batch_p: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []

    def flush() -> None:
        with engine.begin() as conn:
            if batch_d:
                conn.execute(insert(Decision), batch_d)
            if batch_e:
                conn.execute(insert(AuditEvent), batch_e)
            if batch_p:
                conn.execute(insert(PersonalData), batch_p)
        batch_d.clear()
        batch_e.clear()
        batch_p.clear()

    with engine.begin() as conn:
        conn.execute(
            insert(Tenant), [{"id": "ten_bulk", "name": "bulk", "facts": {}, "created_at": start}]
        )
    for i in range(decisions):
        did = f"dec_{i:032x}"
        when = start + timedelta(seconds=i)
        outcome = "prompt_blocked" if i % 10 == 0 else "allowed"
        opening = dataclasses.replace(
            _opening("ten_bulk", i), request={"prompt": f"prompt {i}", "user": f"u{i % 100}"}
        )
        text_ = opening.request["prompt"]
        record = {**RECORD, "prompt": {**RECORD["prompt"], "text": text_, "normalised": text_}}
        if outcome == "prompt_blocked":
            record["prompt"]["assessment"] = {
                **record["prompt"]["assessment"],
                "flagged": ["sexual"],
            }
        http_status = 400 if outcome == "prompt_blocked" else 200
        closing = closing_values(outcome, http_status, None, record, when)
        batch_d.append(decision_row(did, opening, when) | closing)
        received, personal_r = received_event(did, opening, when)
        decided, personal_d = decided_event(
            did, "ten_bulk", outcome, http_status, None, record, when
        )
        batch_p.extend(personal_r + personal_d)
        for spec in (received, decided):
            seq += 1
            payload = canonical_json(
                {
                    "seq": seq,
                    "kind": spec.kind,
                    "decision_id": did,
                    "tenant_id": "ten_bulk",
                    "occurred_at": when.isoformat().replace("+00:00", "Z"),
                    "body": spec.body,
                }
            )
            new = chain_hash(seq, head, payload)
            batch_e.append(
                {
                    "seq": seq,
                    "kind": spec.kind,
                    "decision_id": did,
                    "tenant_id": "ten_bulk",
                    "occurred_at": when,
                    "payload": payload,
                    "prev_hash": head,
                    "chain_hash": new,
                }
            )
            head = new
            frontier.append(leaf_hash(payload))
            if seq % 100_000 == 0:
                root = frontier.root()
                note = checkpoint_note(seq, root, head)
                checkpoints.append(
                    {
                        "size": seq,
                        "chain_head": head,
                        "merkle_root": root.hex(),
                        "frontier": json.dumps(frontier.to_json()),
                        "key_id": signer.key_id,
                        "note": note,
                        "signature": signer.sign(note.encode()),
                        "created_at": when,
                    }
                )
        if len(batch_e) >= 20_000:
            flush()
    flush()
    with engine.begin() as conn:
        if checkpoints:
            conn.execute(insert(AuditCheckpoint), checkpoints)
        conn.execute(
            text("UPDATE audit_head SET seq = :s, chain_hash = :h, frontier = :f"),
            {"s": seq, "h": head, "f": json.dumps(frontier.to_json())},
        )
    engine.dispose()
    return time.perf_counter() - t0


def bench_verify(url: str, signer: Signer, *, rows: bool = True) -> tuple[float, str]:
    engine = make_engine(url)
    t0 = time.perf_counter()
    with unit_of_work(make_session_factory(engine)) as session:
        report = verify_trail(session, signer.public_key_b64, rows=rows)
    elapsed = time.perf_counter() - t0
    engine.dispose()
    return elapsed, report.summary


def export_child(url: str, out: str, key: str) -> None:
    """Runs in a child process: stream every decision to CSV; print seconds and peak RSS.

    ``key``: the public key rows are verified with as they stream, or "-" for none.
    """
    from gateway.audit.export import export_chunks
    from gateway.audit.search import DecisionFilters

    engine = make_engine(url)
    t0 = time.perf_counter()
    rows = 0
    with open(out, "wb") as fh:
        chunks = export_chunks(
            "csv",
            make_session_factory(engine),
            DecisionFilters(),
            public_key=None if key == "-" else key,
        )
        for chunk in chunks:
            fh.write(chunk)
            rows += chunk.count(b"\n")
    elapsed = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "peak_mb": peak_mb, "lines": rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--appends", type=int, default=2000, help="decisions per append run")
    parser.add_argument(
        "--clients", default="1,16", help="concurrent request threads, comma-separated"
    )
    parser.add_argument(
        "--rows", "--bulk", type=int, default=1_000_000, help="decisions to bulk-fill (0: skip)"
    )
    parser.add_argument(
        "--export-child", nargs=3, metavar=("URL", "OUT", "KEY"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.export_child:
        export_child(*args.export_child)
        return
    signer = Signer.from_seed_b64("C" * 43 + "=")
    made: list[str] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _run(args, signer, Path(tmp), made)
    finally:
        _drop(args.database_url, made)


def _run(args: argparse.Namespace, signer: Signer, work: Path, made: list[str]) -> None:
    kind = "postgresql" if args.database_url else "sqlite"
    print(f"database: {kind}; {os.cpu_count()} CPUs; {platform.python_version()}")
    aim = 1000 if kind == "sqlite" else 2000
    for clients in (int(c) for c in args.clients.split(",")):
        for sync in ("FULL", "NORMAL") if kind == "sqlite" else ("FULL",):
            url = _fresh_database(args.database_url, work / f"appends-{clients}-{sync}")
            made.append(url)
            upgrade(url, REPO / "migrations")
            f = bench_appends(url, args.appends, clients, sync)
            label = f", synchronous={sync}" if kind == "sqlite" else ""
            print(
                f"appends ({clients} concurrent client{'s' if clients > 1 else ''}{label}; "
                f"{args.appends} decisions, 2 events each, checkpoint every 1000):"
            )
            print(
                f"  with chain, group commit (the gateway's path): {f['group_commit']:,.0f} "
                f"decisions/s ({f['events_per_commit']:.1f} events per commit)"
            )
            print(
                f"  with chain, a transaction per write (before):  {f['per_request']:,.0f} "
                "decisions/s"
            )
            print(f"  baseline without chain (a transaction per write): {f['no_chain']:,.0f}/s")
            met = "MET" if f["group_commit"] >= aim else "NOT MET"
            print(f"  aim >= {aim:,}/s with chain: {met}")
    if args.rows <= 0:
        return
    url2 = _fresh_database(args.database_url, work / "bulk")
    made.append(url2)
    upgrade(url2, REPO / "migrations")
    fill = bulk_fill(url2, args.rows, signer)
    events = 2 * args.rows
    print(f"bulk fill: {args.rows:,} decisions / {events:,} events in {fill:.1f} s")
    plain, _ = bench_verify(url2, signer, rows=False)
    seconds, summary = bench_verify(url2, signer)
    print(f"verify: {events:,} events in {seconds:.1f} s ({events / seconds:,.0f} events/s)")
    print(f"  -> {summary}")
    print(f"  chain and checkpoints only (--no-rows), same run: {plain:.1f} s")
    at_1m = seconds * 1_000_000 / events
    scaled = "" if events == 1_000_000 else f" (scaled linearly from {events:,}: {at_1m:.1f} s)"
    print(f"  aim 1,000,000 events <= 60 s{scaled}: {'MET' if at_1m <= 60 else 'NOT MET'}")
    out = str(work / "export.csv")
    for label, key in (("rows verified", signer.public_key_b64), ("rows not verified", "-")):
        figures = _export(url2, out, key)
        print(
            f"export ({label}): {args.rows:,} decisions to CSV in {figures['seconds']:.1f} s, "
            f"peak RSS {figures['peak_mb']:.0f} MB, {os.path.getsize(out) / 1e6:.0f} MB file, "
            f"{figures['lines'] - 1:,} data lines"
        )
        at_1m = figures["seconds"] * 1_000_000 / args.rows
        ok = at_1m <= 60 and figures["peak_mb"] <= 300
        scaled = (
            ""
            if args.rows == 1_000_000
            else f" (time scaled linearly from {args.rows:,}: {at_1m:.1f} s; memory not scaled)"
        )
        print(f"  aim <= 60 s and <= 300 MB for 1,000,000{scaled}: {'MET' if ok else 'NOT MET'}")


def _export(url: str, out: str, key: str) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, __file__, "--export-child", url, out, key],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    figures: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    return figures


def _drop(admin_url: str | None, made: list[str]) -> None:
    """Drop the PostgreSQL databases the benchmark created."""
    if not admin_url or not made:
        return
    admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for url in made:
            name = url.rsplit("/", 1)[1]
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


if __name__ == "__main__":
    main()
