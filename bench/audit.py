"""Audit trail figures: chained appends, export of 1M decisions, verify of 1M events.

Aims (issue "Tamper-evident audit trail"): appends >= 1,000 decisions/s on SQLite and
>= 2,000/s on PostgreSQL; export of 1,000,000 decisions to CSV in <= 60 s with peak memory
<= 300 MB; verify of 1,000,000 events in <= 60 s.

- appends: each decision is written exactly as a request writes it (decision row + "received"
  event committed, then "decided" event + outcome committed: two transactions, hash chain,
  Merkle frontier, checkpoints every 1000). Baseline in the same run: the same two
  transactions writing the decision row only, without the audit chain.
- verify / export: the trail is bulk-filled with N synthetic decisions (2N chained events)
  through the same hashing code, then `verify_trail` and the CSV exporter run over it; the
  export runs in a child process so its peak RSS is its own.

    .venv/bin/python bench/audit.py [--database-url URL] [--appends 2000] [--bulk 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text

from gateway.audit.decisions import Opening, close_decision, open_decision
from gateway.audit.events import AuditLog, chain_hash, checkpoint_note, leaf_hash
from gateway.audit.merkle import Frontier
from gateway.audit.signing import Signer
from gateway.audit.verify import verify_trail
from gateway.db.engine import make_engine, make_session_factory, unit_of_work
from gateway.db.migrate import upgrade
from gateway.db.models import AuditCheckpoint, AuditEvent, Decision, Tenant

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
        return f"sqlite:///{workdir / 'bench.db'}"
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


def bench_appends(url: str, n: int, synchronous: str = "FULL") -> tuple[float, float]:
    engine = make_engine(url, sqlite_synchronous=synchronous)
    sessions = make_session_factory(engine)
    log = AuditLog(Signer.from_seed_b64("B" * 43 + "="), 1000)
    with unit_of_work(sessions) as s:
        if s.get(Tenant, "ten_bench") is None:
            s.add(Tenant(id="ten_bench", name="bench", facts={}, created_at=datetime.now(UTC)))
    t0 = time.perf_counter()
    for i in range(n):
        with unit_of_work(sessions) as s:
            d = open_decision(s, log, _opening("ten_bench", i))
        with unit_of_work(sessions) as s:
            close_decision(
                s, log, d.id, outcome="allowed", http_status=200, error_code=None, record=RECORD
            )
    chained = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(n):  # baseline: the same decision writes, no audit chain
        with unit_of_work(sessions) as s:
            did = "dec_" + uuid.uuid4().hex
            s.add(
                Decision(
                    id=did,
                    tenant_id="ten_bench",
                    key_id="bench",
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
    bare = n / (time.perf_counter() - t0)
    engine.dispose()
    return chained, bare


def bulk_fill(url: str, decisions: int, signer: Signer) -> float:
    """N synthetic decisions and 2N chained events, hashed by the gateway's own functions."""
    engine = make_engine(url)
    t0 = time.perf_counter()
    head, frontier, seq = "0" * 64, Frontier(), 0
    start = datetime(2026, 1, 1, tzinfo=UTC)
    batch_d: list[dict[str, Any]] = []
    batch_e: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []

    def flush() -> None:
        with engine.begin() as conn:
            if batch_d:
                conn.execute(insert(Decision), batch_d)
            if batch_e:
                conn.execute(insert(AuditEvent), batch_e)
        batch_d.clear()
        batch_e.clear()

    with engine.begin() as conn:
        conn.execute(
            insert(Tenant), [{"id": "ten_bulk", "name": "bulk", "facts": {}, "created_at": start}]
        )
    for i in range(decisions):
        did = f"dec_{i:032x}"
        when = start + timedelta(seconds=i)
        outcome = "prompt_blocked" if i % 10 == 0 else "allowed"
        batch_d.append(
            {
                "id": did,
                "tenant_id": "ten_bulk",
                "key_id": "bulk",
                "instance_id": "bulk",
                "user": f"u{i % 100}",
                "status": "closed",
                "outcome": outcome,
                "http_status": 400 if outcome == "prompt_blocked" else 200,
                "error_code": None,
                "model_id": "demo-tiny",
                "licence_id": "apache-2.0",
                "intended_use": "commercial",
                "policy_version": "f" * 64,
                "created_at": when,
                "closed_at": when,
                "request": {"prompt": f"prompt {i}"},
                "record": RECORD,
                "categories": ",sexual," if outcome == "prompt_blocked" else "",
            }
        )
        for kind in ("received", "decided"):
            seq += 1
            payload = json.dumps(
                {"body": {"outcome": outcome}, "decision_id": did, "kind": kind, "seq": seq},
                sort_keys=True,
                separators=(",", ":"),
            )
            new = chain_hash(seq, head, payload)
            batch_e.append(
                {
                    "seq": seq,
                    "kind": kind,
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


def bench_verify(url: str, signer: Signer) -> tuple[float, str]:
    engine = make_engine(url)
    t0 = time.perf_counter()
    with unit_of_work(make_session_factory(engine)) as session:
        report = verify_trail(session, signer.public_key_b64)
    elapsed = time.perf_counter() - t0
    engine.dispose()
    return elapsed, report.summary


def export_child(url: str, out: str) -> None:
    """Runs in a child process: stream every decision to CSV; print seconds and peak RSS."""
    from gateway.audit.export import export_chunks
    from gateway.audit.search import DecisionFilters

    engine = make_engine(url)
    t0 = time.perf_counter()
    rows = 0
    with open(out, "wb") as fh:
        for chunk in export_chunks("csv", make_session_factory(engine), DecisionFilters()):
            fh.write(chunk)
            rows += chunk.count(b"\n")
    elapsed = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "peak_mb": peak_mb, "lines": rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--bulk", type=int, default=1_000_000, help="decisions to bulk-fill")
    parser.add_argument("--export-child", nargs=2, metavar=("URL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export_child:
        export_child(*args.export_child)
        return
    signer = Signer.from_seed_b64("C" * 43 + "=")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        kind = "postgresql" if args.database_url else "sqlite"
        url = _fresh_database(args.database_url, work)
        upgrade(url, REPO / "migrations")
        print(f"database: {kind}")
        aim = 1000 if kind == "sqlite" else 2000
        for sync in ("FULL", "NORMAL") if kind == "sqlite" else ("FULL",):
            chained, bare = bench_appends(url, args.appends, sync)
            label = f" (sqlite synchronous={sync})" if kind == "sqlite" else ""
            print(
                f"appends{label}: {chained:,.0f} decisions/s with chain (baseline without "
                f"chain: {bare:,.0f}/s; {args.appends} decisions, 2 events each)"
            )
            print(f"  aim >= {aim:,}/s: {'MET' if chained >= aim else 'NOT MET'}")
        url2 = (
            _fresh_database(args.database_url, work / "bulk")
            if args.database_url
            else (f"sqlite:///{work / 'bulk.db'}")
        )
        upgrade(url2, REPO / "migrations")
        fill = bulk_fill(url2, args.bulk, signer)
        print(f"bulk fill: {args.bulk:,} decisions / {2 * args.bulk:,} events in {fill:.1f} s")
        seconds, summary = bench_verify(url2, signer)
        print(
            f"verify: {2 * args.bulk:,} events in {seconds:.1f} s "
            f"({2 * args.bulk / seconds:,.0f} events/s) -> {summary}"
        )
        print(
            f"  aim 1,000,000 events <= 60 s: "
            f"{'MET' if seconds * 1_000_000 / (2 * args.bulk) <= 60 else 'NOT MET'}"
        )
        out = str(work / "export.csv")
        child = subprocess.run(
            [sys.executable, __file__, "--export-child", url2, out],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        print(
            f"export: {args.bulk:,} decisions to CSV in {figures['seconds']:.1f} s, "
            f"peak RSS {figures['peak_mb']:.0f} MB, {os.path.getsize(out) / 1e6:.0f} MB file"
        )
        ok = figures["seconds"] * 1_000_000 / args.bulk <= 60 and figures["peak_mb"] <= 300
        print(f"  aim <= 60 s and <= 300 MB for 1,000,000: {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
