"""Licence policy evaluation cost per decision (aim: <= 1 ms).

Evaluates every registered model x every intended use x a few tenant fact sets, many times,
with the same code the gateway runs per request (``evaluate_model``). The baseline, measured
in the same run, is the cheapest thing every request does anyway: hashing the request body
(sha256 of its canonical JSON), so the figure reads "policy costs k times a hash".

    .venv/bin/python bench/policy.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path

from gateway.domain import INTENDED_USES
from gateway.policy.bundle import load_bundle
from gateway.policy.evaluate import evaluate_model

REPO = Path(__file__).resolve().parent.parent
FACTS = [
    {},
    {"annual_revenue_usd": 250_000, "stability_registered": True},
    {"annual_revenue_usd": 5_000_000, "stability_enterprise_agreement": "EA-1"},
    {"bfl_commercial_licence": "BFL-7", "brand_owner": "acme"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    bundle = load_bundle(REPO / "policies")
    cases = [(m, u, f) for m in bundle.models.models for u in INTENDED_USES for f in FACTS]
    bodies = [
        json.dumps({"model": m, "intended_use": u, "facts": f}, sort_keys=True).encode()
        for m, u, f in cases
    ]
    policy_us: list[float] = []
    hash_us: list[float] = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for model, use, facts in cases:
            evaluate_model(bundle, model, use, facts)
        policy_us.append((time.perf_counter() - t0) / len(cases) * 1e6)
        t0 = time.perf_counter()
        for body in bodies:
            hashlib.sha256(body).hexdigest()
        hash_us.append((time.perf_counter() - t0) / len(cases) * 1e6)
    med, p95 = statistics.median(policy_us), sorted(policy_us)[int(0.95 * len(policy_us))]
    base = statistics.median(hash_us)
    print(
        f"policy bundle {bundle.version[:12]}: {len(bundle.models.models)} models, "
        f"{len(bundle.licences)} licences, {len(cases)} cases x {args.rounds} rounds"
    )
    print(f"{'':32}{'median us':>12}{'p95 us':>12}")
    print(f"{'evaluate_model per decision':32}{med:12.1f}{p95:12.1f}")
    print(f"{'baseline: sha256 of the request':32}{base:12.1f}")
    print(f"ratio policy/baseline: {med / base:.1f}x")
    verdict = "MET" if p95 <= 1000 else "NOT MET"
    print(f"aim: <= 1 ms (1000 us) per decision at p95: {verdict}")


if __name__ == "__main__":
    main()
