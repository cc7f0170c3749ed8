"""The fault table: what clients get, and what the trail holds, when the database fails.

For each fault it starts a real ``gateway serve`` process on a fresh database, sends
``--requests`` image requests at ``--rate`` per second from ``--clients`` threads (demo-tiny,
64x64, 2 steps), breaks the database ``--after`` seconds in for the fault's length
(tests/db_faults.py: SQLite locked by another connection, PostgreSQL refusing and killing
connections), then counts the answers and, once the database is back, the decisions by
outcome and the reasons of the failed ones, how soon they were closed, and whether the
trail verifies. Faults: ``short`` (shorter than the writer's retry
window: ridden out) and ``long`` (longer: 503, then reconciled).

    .venv/bin/python bench/faults.py [--postgres URL] [--requests 100] [--rate 5]

Each server runs with GATEWAY_SQLITE_BUSY_TIMEOUT_S=1, GATEWAY_AUDIT_RETRY_S=3 and
GATEWAY_RECONCILE_INTERVAL_S=1 so that a run takes seconds; faults last 1.5 s and 6 s.
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402

from gateway.db.engine import make_engine  # noqa: E402
from gateway.db.models import Decision  # noqa: E402
from gateway.generation.demo_tiny import build_demo_tiny  # noqa: E402
from tests.db_faults import DatabaseFault  # noqa: E402

BODY = {"model": "demo-tiny", "prompt": "a lighthouse at dusk", "size": "64x64", "steps": 2}
FAULTS = {"short": 1.5, "long": 6.0}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _database(postgres: str | None, work: Path) -> str:
    if postgres is None:
        return f"sqlite:///{work / 'gateway.db'}"
    name = "gw_faults_" + uuid.uuid4().hex[:10]
    admin = make_engine(postgres).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return postgres.rsplit("/", 1)[0] + "/" + name


def _serve(url: str, work: Path, models: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    env = {
        **os.environ,
        "GATEWAY_DATA_DIR": str(work / "var"),
        "GATEWAY_DATABASE_URL": url,
        "GATEWAY_MODEL_DIR": str(models),
        "GATEWAY_QUEUE_SIZE": "512",
        "GATEWAY_SQLITE_BUSY_TIMEOUT_S": "1",
        "GATEWAY_AUDIT_RETRY_S": "3",
        "GATEWAY_RECONCILE_INTERVAL_S": "1",
        "HF_HUB_OFFLINE": "1",
    }
    port = _port()
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit((work / "serve.log").read_text())
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    key = (work / "var" / "bootstrap-admin-key").read_text().strip()
    return proc, base, key


def _scenario(url: str, fault_s: float, args: argparse.Namespace, work: Path, models: Path) -> None:
    proc, base, key = _serve(url, work, models)
    headers = {"Authorization": f"Bearer {key}"}
    answers: collections.Counter[str] = collections.Counter()
    leaked: list[str] = []  # images delivered for a decision not closed (must stay empty)
    delivered: list[str] = []
    sent = iter(range(args.requests))
    lock = threading.Lock()
    last_answer = [0.0]

    def client() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
            while True:
                with lock:
                    i = next(sent, None)
                if i is None:
                    return
                time.sleep(max(0.0, t0 + i / args.rate - time.monotonic()))  # open loop
                try:
                    r = http.post("/v1/images/generations", json=BODY)
                except httpx.HTTPError as exc:
                    with lock:
                        answers[f"no answer ({type(exc).__name__})"] += 1
                    continue
                body = r.json()
                label = str(r.status_code)
                if r.status_code != 200:
                    label += " " + body["error"]["code"]
                    label += " +decision_id" if body["error"].get("decision_id") else ""
                    label += " +Retry-After" if "retry-after" in r.headers else ""
                with lock:
                    answers[label] += 1
                    last_answer[0] = time.monotonic()
                    if r.status_code == 200:
                        delivered.append(body["governance"]["decision_id"])

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(args.after)
    fault = DatabaseFault(url)
    fault.on()
    time.sleep(fault_s)
    fault.off()
    healed = datetime.now(UTC)
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    engine = make_engine(url)
    while True:  # until the reconciler closed everything
        try:
            with engine.connect() as conn:
                still = conn.scalar(select(func.count()).where(Decision.status == "open"))
                if not still:
                    break
        except OperationalError:
            pass
        time.sleep(0.2)
    settled = time.monotonic() - last_answer[0]
    with engine.connect() as conn:
        outcomes = collections.Counter(
            f"{o} ({s}, {c})" if o == "failed" else str(o)
            for o, s, c in conn.execute(
                select(Decision.outcome, Decision.http_status, Decision.error_code)
            )
        )
        closed = dict(conn.execute(select(Decision.id, Decision.outcome)).all())
        last_failed = conn.scalar(
            select(func.max(Decision.closed_at)).where(Decision.outcome == "failed")
        )
        reasons = collections.Counter(
            (record or {})["errors"][-1]["message"][:90]
            for (record,) in conn.execute(
                select(Decision.record).where(Decision.outcome == "failed")
            )
        )
    engine.dispose()
    leaked = [d for d in delivered if closed.get(d) not in ("allowed", "partially_filtered")]
    verify = httpx.get(f"{base}/v1/audit/verify", headers=headers, timeout=120).json()
    proc.terminate()
    proc.wait(30)
    print(f"  {args.requests} requests from {args.clients} clients in {elapsed:.1f} s")
    print(f"  client got:  {dict(sorted(answers.items()))}")
    print(f"  trail holds: {dict(sorted(outcomes.items()))}; verify ok={verify.get('ok')}")
    print(f"  failed because: {dict(reasons)}")
    if last_failed is not None:
        lag = (last_failed.replace(tzinfo=last_failed.tzinfo or UTC) - healed).total_seconds()
        print(f"  the last failed decision closed {lag:.1f} s after the database was back")
    print(f"  none open {settled:.1f} s after the last answer")
    print(f"  images delivered without their decision closed: {len(leaked)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=None, help="also run on PostgreSQL (admin URL)")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5.0, help="requests started per second")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--after", type=float, default=4.0, help="seconds before the fault")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gw-faults-") as tmp:
        root = Path(tmp)
        build_demo_tiny(root / "models" / "demo-tiny")
        databases = ["sqlite"] + (["postgres"] if args.postgres else [])
        for database in databases:
            for name, seconds in FAULTS.items():
                work = root / f"{database}-{name}"
                work.mkdir()
                url = _database(args.postgres if database == "postgres" else None, work)
                kind = "locked" if database == "sqlite" else "refusing and killing connections"
                print(f"{database}, {kind} for {seconds:g} s ({name}):", flush=True)
                _scenario(url, seconds, args, work, root / "models")


if __name__ == "__main__":
    main()
