"""A separate OS process appending to the audit trail (used by test_writer.py).

    python -m tests.audit.append_worker URL NAME DECISIONS THREADS GO_FILE

Says it is ready (GO_FILE.NAME.ready), waits for GO_FILE to exist (so that both processes
start together), then writes DECISIONS
decisions through the gateway's own DecisionWriter from THREADS threads, plus one plain
``AuditLog.append`` per ten decisions, and prints a line of JSON with what it wrote.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from pathlib import Path

from gateway.audit.decisions import Opening
from gateway.audit.events import AuditLog
from gateway.audit.signing import Signer
from gateway.audit.writer import DecisionWriter
from gateway.db.engine import make_engine, make_session_factory, unit_of_work

SEED = "D" * 43 + "="
CHECKPOINT_EVERY = 7


def main(url: str, name: str, decisions: int, threads: int, go_file: str) -> None:
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    log = AuditLog(Signer.from_seed_b64(SEED), CHECKPOINT_EVERY)
    writer = DecisionWriter(engine, log)
    counter = itertools.count()
    errors: list[BaseException] = []
    Path(f"{go_file}.{name}.ready").touch()
    while not Path(go_file).exists():
        time.sleep(0.01)

    def client() -> None:
        try:
            while (i := next(counter)) < decisions:
                opening = Opening(
                    tenant_id="t1",
                    key_id="k",
                    instance_id=name,
                    user=f"{name}-{i}",
                    model_id="demo-tiny",
                    licence_id="apache-2.0",
                    intended_use="research",
                    policy_version="0" * 64,
                    request={"prompt": f"{name} prompt {i}"},
                )
                decision_id = writer.open(opening)
                if i % 10 == 0:
                    with unit_of_work(sessions) as session:
                        log.append(session, "note", {"from": name, "i": i}, tenant_id="t1")
                writer.close(
                    decision_id,
                    outcome="allowed",
                    http_status=200,
                    error_code=None,
                    record={"prompt": {"text": f"{name} prompt {i}"}},
                )
        except BaseException as exc:
            errors.append(exc)

    started = time.time()
    workers = [threading.Thread(target=client) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    engine.dispose()
    if errors:
        raise errors[0]
    summary = {"name": name, "batches": writer.batches, "writes": writer.writes}
    print(json.dumps({**summary, "started": started, "ended": time.time()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
