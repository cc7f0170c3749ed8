"""Governance overhead: the gateway's POST /v1/images/generations against the bare diffusers call.

Builds a fresh runtime in a temporary data directory (SQLite unless ``--database-url`` names
another database), which builds demo-tiny and loads every model through the real code. The
baseline is the bare diffusers call on the same demo-tiny folder, measured by
``bench/bare_pipeline.py`` in its own clean process (a baseline taken inside the gateway's
process is slowed by whatever else runs there, and hides the loss: issue 11).

    .venv/bin/python bench/overhead.py [--requests N] [--steps 4] [--size 64x64]
                                       [--database-url URL] [--uvicorn]

The aim: median gateway / bare ratio <= 1.2 at 4 steps, 64x64.
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import math
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import torch  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from gateway.app import create_app  # noqa: E402
from gateway.auth.keys import create_key  # noqa: E402
from gateway.db.engine import unit_of_work  # noqa: E402
from gateway.db.models import Decision  # noqa: E402
from gateway.domain import Role  # noqa: E402
from gateway.runtime import Runtime, build_runtime  # noqa: E402
from gateway.settings import Settings  # noqa: E402

MODEL = "demo-tiny"
AIM_RATIO = 1.2
AIM_STEPS = 4
AIM_SIZE = "64x64"
WARMUP = 3
STAGES = ("prompt_classifier", "generator", "image_classifier", "provenance")

PROMPTS = (
    "a lighthouse on a rocky coast at dawn",
    "a bowl of ripe oranges on a wooden table",
    "a red bicycle leaning against a brick wall",
    "a snowy mountain village at night",
    "a watercolour painting of a sailing boat",
    "a cup of coffee next to an open book",
    "a field of sunflowers under a blue sky",
    "a cat sleeping on a windowsill in the sun",
    "an old stone bridge over a quiet river",
    "a hot air balloon above green hills",
    "a bookshelf full of colourful books",
    "a tram crossing a city square in the rain",
)


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class HttpResponse(Protocol):
    """What we need of an httpx / httpx2 response (TestClient uses httpx2)."""

    @property
    def status_code(self) -> int: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


class HttpClient(Protocol):
    def post(self, url: str, *, headers: dict[str, str], json: Any) -> HttpResponse: ...


# -- measurement ---------------------------------------------------------------------------


@dataclass
class Samples:
    bare_ms: list[float] = field(default_factory=list)
    gateway_ms: list[float] = field(default_factory=list)
    decision_ids: list[str] = field(default_factory=list)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def parse_size(size: str) -> tuple[int, int]:
    width, sep, height = size.partition("x")
    if not sep:
        raise argparse.ArgumentTypeError(f"size must look like 64x64, not {size!r}")
    return int(width), int(height)


def bare_in_clean_process(runtime: Runtime, n: int, steps: int, size: str) -> list[float]:
    """Per-call ms of the bare pipeline (one image per call), in a separate process."""
    import json
    import subprocess

    demo_dir = runtime.settings.resolved_model_dir / MODEL
    cmd = [
        sys.executable,
        str(REPO / "bench" / "bare_pipeline.py"),
        "--demo-dir",
        str(demo_dir),
        "--size",
        size,
        "--steps",
        str(steps),
        "--batch",
        "1",
        "--images",
        str(n),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    calls: list[float] = json.loads(out.strip().splitlines()[-1])["batches"]["1"]["call_ms"]
    return calls


def gateway_call(
    client: HttpClient, key: str, prompt: str, steps: int, size: str, seed: int
) -> HttpResponse:
    return client.post(
        "/v1/images/generations",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL, "prompt": prompt, "size": size, "steps": steps, "seed": seed},
    )


def decode_image(response: HttpResponse) -> tuple[str, Image.Image]:
    if response.status_code != 200:
        raise RuntimeError(f"gateway answered {response.status_code}: {response.text[:500]}")
    body: dict[str, Any] = response.json()
    png = base64.b64decode(body["data"][0]["b64_json"])
    return str(body["governance"]["decision_id"]), Image.open(io.BytesIO(png)).convert("RGB")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return (time.perf_counter() - t0) * 1000, value


def measure(
    runtime: Runtime, client: HttpClient, key: str, n: int, steps: int, size: str
) -> Samples:
    def gateway(i: int) -> tuple[float, HttpResponse]:
        prompt = PROMPTS[i % len(PROMPTS)]
        ms, response = timed(lambda: gateway_call(client, key, prompt, steps, size, i))
        return ms, response

    progress(f"warming up ({WARMUP} calls)")
    for i in range(WARMUP):
        decode_image(gateway(1000 + i)[1])

    samples = Samples()
    progress(f"measuring {n} gateway requests")
    for i in range(n):
        gw_ms, response = gateway(i)
        decision_id, _ = decode_image(response)
        samples.gateway_ms.append(gw_ms)
        samples.decision_ids.append(decision_id)
        if (i + 1) % 10 == 0 or i + 1 == n:
            progress(f"  {i + 1}/{n}")
    progress("measuring the bare pipeline in a clean process (the gateway is idle)")
    samples.bare_ms = bare_in_clean_process(runtime, n, steps, size)
    return samples


def stage_timings(runtime: Runtime, decision_ids: Sequence[str]) -> dict[str, list[float]]:
    """Per-stage timings the pipeline recorded in each decision (``record.timings_ms``)."""
    out: dict[str, list[float]] = {}
    with unit_of_work(runtime.sessions) as session:
        for decision_id in decision_ids:
            decision = session.get(Decision, decision_id)
            if decision is None or not decision.record:
                raise RuntimeError(f"decision {decision_id} was not recorded")
            for stage, ms in decision.record.get("timings_ms", {}).items():
                out.setdefault(stage, []).append(float(ms))
    return out


# -- serving -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serve_testclient(app: FastAPI) -> Iterator[HttpClient]:
    with TestClient(app) as client:
        yield client


@contextmanager
def serve_uvicorn(app: FastAPI) -> Iterator[HttpClient]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)


# -- report --------------------------------------------------------------------------------


def report(args: argparse.Namespace, runtime: Runtime, samples: Samples, transport: str) -> bool:
    stages = stage_timings(runtime, samples.decision_ids)
    bare_med = statistics.median(samples.bare_ms)
    gw_med = statistics.median(samples.gateway_ms)
    ratio = gw_med / bare_med
    recorded = [sum(v) for v in zip(*stages.values(), strict=True)] if stages else []
    rest = [g - r for g, r in zip(samples.gateway_ms, recorded, strict=True)]
    url = runtime.settings.resolved_database_url
    database = url.split(":", 1)[0]
    device = "cuda" if torch.cuda.is_available() else "cpu"

    print()
    print("Governance overhead: gateway POST /v1/images/generations vs bare diffusers call")
    print(
        f"model {MODEL}, {args.size}, {args.steps} steps, n=1, N={args.requests}, "
        f"transport {transport}, database {database}, device {device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print()
    print(f"{'path':<34}{'median ms':>12}{'p95 ms':>12}")
    print("-" * 58)
    bare_p95 = percentile(samples.bare_ms, 95)
    print(f"{'bare (own clean process)':<34}{bare_med:>12.1f}{bare_p95:>12.1f}")
    print(f"{'gateway':<34}{gw_med:>12.1f}{percentile(samples.gateway_ms, 95):>12.1f}")
    print()
    print(f"{'ratio gateway/bare (of medians)':<34}{ratio:>12.2f}")
    print(f"{'overhead ms (diff of medians)':<34}{gw_med - bare_med:>12.1f}")
    print()
    print("Gateway stages (decision record timings_ms)")
    print(f"{'stage':<34}{'median ms':>12}{'p95 ms':>12}")
    print("-" * 58)
    for stage in [*STAGES, *sorted(set(stages) - set(STAGES))]:
        values = stages.get(stage)
        if values:
            med, p95 = statistics.median(values), percentile(values, 95)
            print(f"{stage:<34}{med:>12.1f}{p95:>12.1f}")
    if rest:
        label = "rest (HTTP, auth, DB, JSON)"
        print(f"{label:<34}{statistics.median(rest):>12.1f}{percentile(rest, 95):>12.1f}")
    print()
    met = ratio <= AIM_RATIO
    aim = f"aim: gateway/bare ratio of medians <= {AIM_RATIO} at {AIM_STEPS} steps, {AIM_SIZE}"
    if args.steps == AIM_STEPS and args.size == AIM_SIZE:
        print(f"{aim}: {'MET' if met else 'NOT MET'} ({ratio:.2f})")
    else:
        print(
            f"{aim}: not evaluated (this run: {args.steps} steps, {args.size}; "
            f"ratio {ratio:.2f}, {'within' if met else 'above'} {AIM_RATIO})"
        )
    return met


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=30, help="measured pairs (default 30)")
    parser.add_argument("--steps", type=int, default=AIM_STEPS, help="inference steps")
    parser.add_argument("--size", default=AIM_SIZE, help="WIDTHxHEIGHT (default 64x64)")
    parser.add_argument(
        "--database-url", default=None, help="SQLAlchemy URL (default: SQLite in the temp dir)"
    )
    parser.add_argument(
        "--uvicorn",
        action="store_true",
        help="serve with a real uvicorn server on a free port and use httpx (default TestClient)",
    )
    args = parser.parse_args(argv)
    try:
        parse_size(args.size)
    except (argparse.ArgumentTypeError, ValueError):
        parser.error(f"--size must look like 64x64, not {args.size!r}")
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data",
            policy_dir=REPO / "policies",
            database_url=args.database_url,
        )
        progress(f"building runtime in {tmp} (demo-tiny, MiniLM, open_nsfw)")
        t0 = time.perf_counter()
        runtime = build_runtime(settings)
        progress(f"runtime ready in {time.perf_counter() - t0:.1f} s")
        try:
            with unit_of_work(runtime.sessions) as session:
                key = create_key(
                    session, tenant="bench", roles=[Role.REQUESTER], label="bench"
                ).secret
            app = create_app(settings, runtime)
            serve = serve_uvicorn if args.uvicorn else serve_testclient
            transport = "uvicorn+httpx" if args.uvicorn else "TestClient (in-process ASGI)"
            with serve(app) as client:
                samples = measure(runtime, client, key, args.requests, args.steps, args.size)
            report(args, runtime, samples, transport)
        finally:
            runtime.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
