"""Replay throughput: re-evaluating recorded decisions under a draft policy (aim: 100,000 in
<= 30 s).

Builds a real gateway runtime on a fresh database (SQLite by default, or ``--database-url``),
makes a few real generation requests through the pipeline (demo-tiny) to get real decision
records, then bulk-inserts ``--rows`` decisions that copy those records with varied scores,
models and intended uses. It then times ``replay_decisions`` twice in the same run:
- baseline: streaming the same rows out of the database and decoding their JSON (what any
  replay must do at least), and
- replay: the whole thing under a draft that lowers the violence threshold and adds a term.

    .venv/bin/python bench/replay.py [--rows 100000] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.auth.keys import create_key  # noqa: E402
from gateway.db.engine import unit_of_work  # noqa: E402
from gateway.db.models import Decision  # noqa: E402
from gateway.domain import CATEGORIES, Role  # noqa: E402
from gateway.pipeline.generate import GenerationPipeline  # noqa: E402
from gateway.pipeline.request import GenerationRequest  # noqa: E402
from gateway.policy.bundle import parse_bundle  # noqa: E402
from gateway.policy.replay import recorded_decisions, replay_decisions  # noqa: E402
from gateway.runtime import build_runtime  # noqa: E402
from gateway.settings import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            database_url=args.database_url or f"sqlite:///{tmp}/bench.db",
            policy_dir=REPO / "policies",
            policy_refresh_s=0,
        )
        runtime = build_runtime(settings)
        try:
            run(runtime, args.rows)
        finally:
            runtime.close()


def run(runtime, rows: int) -> None:  # type: ignore[no-untyped-def]
    with unit_of_work(runtime.sessions) as session:
        key = create_key(session, tenant="bench", roles=(Role.REQUESTER,)).secret
        from gateway.auth.keys import authenticate

        principal = authenticate(session, key)
    assert principal is not None
    pipeline = GenerationPipeline.of(runtime)
    for prompt in ("a lighthouse at dusk", "a bowl of fruit"):
        pipeline.generate(
            principal,
            GenerationRequest(model="demo-tiny", prompt=prompt, size="64x64", steps=2),
        )
    with unit_of_work(runtime.sessions) as session:
        templates = [
            d.record for d in session.query(Decision).filter(Decision.outcome == "allowed")
        ]
    assert templates, "no real decision to copy"

    rng = random.Random(0)
    models = list(runtime.bundle.models.models)
    uses = list(runtime.bundle.uses.uses)
    start = datetime.now(UTC) - timedelta(days=30)
    t0 = time.perf_counter()
    batch: list[dict[str, object]] = []
    for i in range(rows):
        record = copy.deepcopy(rng.choice(templates))
        for part in [record["prompt"]["assessment"]] + [
            img["assessment"] for img in record.get("images", [])
        ]:
            part["category_scores"] = {c: round(rng.random() ** 3, 4) for c in CATEGORIES}
        record["prompt"]["normalised"] = rng.choice(
            ["a lighthouse at dusk", "a bloodbath in the street", "a carnage scene", "fruit"]
        )
        batch.append(
            {
                "id": f"dec_bench{i:010d}",
                "tenant_id": principal.tenant_id,
                "key_id": principal.key_id,
                "instance_id": "bench",
                "user": None,
                "status": "closed",
                "outcome": "allowed",
                "http_status": 200,
                "error_code": None,
                "model_id": rng.choice(models),
                "licence_id": None,
                "intended_use": rng.choice(uses),
                "policy_version": runtime.bundle.version,
                "created_at": start + timedelta(seconds=i),
                "closed_at": start + timedelta(seconds=i),
                "request": {},
                "record": record,
                "categories": "",
            }
        )
        if len(batch) == 5000:
            with unit_of_work(runtime.sessions) as session:
                session.execute(insert(Decision), batch)
            batch = []
    if batch:
        with unit_of_work(runtime.sessions) as session:
            session.execute(insert(Decision), batch)
    print(f"inserted {rows:,} decisions in {time.perf_counter() - t0:.1f} s")

    files = dict(runtime.bundle.files)
    files["content.yaml"] = (
        files["content.yaml"]
        .replace("terms: [gore,", "terms: [carnage, gore,", 1)
        .replace(
            "prompt: {low: 0.50, medium: 0.75, high: 0.92}",
            "prompt: {low: 0.3, medium: 0.5, high: 0.6}",
            1,
        )
    )
    draft = parse_bundle(files)

    with unit_of_work(runtime.sessions) as session:
        t0 = time.perf_counter()
        n = sum(1 for _ in recorded_decisions(session, rows + 10, None))
        base_s = time.perf_counter() - t0
    with unit_of_work(runtime.sessions) as session:
        t0 = time.perf_counter()
        result = replay_decisions(session, draft, limit=rows + 10)
        replay_s = time.perf_counter() - t0
    print(f"database: {runtime.engine.dialect.name}; rows: {n:,}")
    print(f"{'':40}{'seconds':>10}{'decisions/s':>14}")
    print(f"{'baseline: stream + decode records':40}{base_s:>10.1f}{n / base_s:>14,.0f}")
    print(f"{'replay under the draft':40}{replay_s:>10.1f}{result['evaluated'] / replay_s:>14,.0f}")
    print(
        f"replay / baseline: {replay_s / base_s:.2f}x; "
        f"changed {result['changed']:,} of {result['evaluated']:,}"
    )
    print(
        f"projected for 100,000 decisions: "
        f"{100_000 / (result['evaluated'] / replay_s):.1f} s (aim <= 30 s)"
    )
    print("transitions:", result["by_transition"])


if __name__ == "__main__":
    main()
