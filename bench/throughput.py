"""Throughput: governed images/s and latency under concurrency, beside the bare pipeline's limit.

Default (``--shape demo-tiny``): the real gateway in a uvicorn subprocess (``python -m gateway
serve``, fresh data directory, SQLite), N requests at each concurrency C over real HTTP. The
bare pipeline's sequential and batched images/s are measured in the same run by
``bench/bare_pipeline.py`` in its own clean process, while the server is idle.

``--shape sd15`` / ``--shape sdxl`` (for a GPU; ``--device cuda --dtype float16``): an
SD-shaped random-weight pipeline. The prompt classifier's MiniLM package is not shipped to such
machines, so the generation service is measured in-process instead of over HTTP: the batcher and
owner thread, the pipeline, the image classifier (open_nsfw) on each batch and PNG encoding.

    python bench/throughput.py [--requests 32] [--concurrency 1 --concurrency 8]
                               [--size 64x64] [--steps 20] [--max-batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO, REPO / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROMPTS = (
    "a lighthouse on a rocky coast at dawn",
    "a bowl of ripe oranges on a wooden table",
    "a red bicycle leaning against a brick wall",
    "a snowy mountain village at night",
)


def progress(message: str) -> None:
    print(f"[throughput] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def run_concurrent(n: int, c: int, one: Callable[[int], Any]) -> dict[str, Any]:
    latencies: list[float] = []
    returned: list[Any] = []
    lock = threading.Lock()

    def timed(i: int) -> None:
        t0 = time.perf_counter()
        value = one(i)
        with lock:
            latencies.append(time.perf_counter() - t0)
            returned.append(value)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(c) as pool:
        list(pool.map(timed, range(n)))
    wall = time.perf_counter() - t0
    return {
        "images_per_s": round(n / wall, 3),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "returned": returned,
    }


def stage_medians(db: Path, decision_ids: Sequence[str]) -> dict[str, float]:
    """Median ms of each stage (record.timings_ms) and batch size over these decisions."""
    import sqlite3

    values: dict[str, list[float]] = {}
    with sqlite3.connect(db) as conn:
        for decision_id in decision_ids:
            row = conn.execute(
                "SELECT record FROM decisions WHERE id = ?", (decision_id,)
            ).fetchone()
            record = json.loads(row[0]) if row and row[0] else {}
            for stage, ms in record.get("timings_ms", {}).items():
                values.setdefault(stage, []).append(float(ms))
            if "batch" in record:
                values.setdefault("batch_size", []).append(float(record["batch"]["size"]))
    return {k: round(statistics.median(v), 1) for k, v in values.items()}


def bare(args: argparse.Namespace, batches: list[int], demo_dir: Path | None) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(REPO / "bench" / "bare_pipeline.py"),
        "--shape",
        args.shape,
        "--size",
        args.size,
        "--steps",
        str(args.steps),
        "--images",
        str(args.bare_images),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
    ]
    if demo_dir is not None:
        cmd += ["--demo-dir", str(demo_dir)]
    for b in batches:
        cmd += ["--batch", str(b)]
    if args.compile:
        cmd.append("--compile")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    progress("bare pipeline in a clean process: " + " ".join(cmd[1:]))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# -- over HTTP (demo-tiny) -----------------------------------------------------------------


def _policies_with_max_batch(tmp: Path, args: argparse.Namespace) -> Path:
    """A copy of the seed policies whose demo-tiny entry sets ``options.max_batch``."""
    import shutil

    out = tmp / "policies"
    shutil.copytree(REPO / "policies", out)
    models = out / "models.yaml"
    text = models.read_text()
    line = "    steps: {min: 1, max: 50, default: 4}\n"
    if text.count(line) != 1:
        raise SystemExit("policies/models.yaml changed: update --gateway-max-batch")
    option = f"    options: {{max_batch: {args.gateway_max_batch}}}\n"
    models.write_text(text.replace(line, line + option))
    return out


def governed_http(args: argparse.Namespace) -> tuple[dict[int, dict[str, float]], dict[str, Any]]:
    import httpx
    from bench_server import start_server

    with tempfile.TemporaryDirectory(prefix="gw-throughput-") as tmp:
        env = {
            **os.environ,
            "GATEWAY_DATA_DIR": str(Path(tmp) / "data"),
            "GATEWAY_QUEUE_SIZE": str(max(64, 2 * max(args.concurrency))),
            "GATEWAY_LOG_LEVEL": "warning",
            "GATEWAY_LOG_FORMAT": "text",
            "PYTHONPATH": str(REPO),
        }
        if args.max_wait_ms is not None:
            env["GATEWAY_BATCH_MAX_WAIT_MS"] = str(args.max_wait_ms)
        if args.gateway_max_batch is not None:
            env["GATEWAY_POLICY_DIR"] = str(_policies_with_max_batch(Path(tmp), args))
        if args.threads:
            env["GATEWAY_TORCH_THREADS"] = str(args.threads)
        with start_server(env) as (base, key):
            demo_dir = Path(tmp) / "data" / "models" / "demo-tiny"
            sizes = {1, args.max_batch, *(min(c, args.max_batch) for c in args.concurrency)}
            limit = bare(args, sorted(sizes), demo_dir)
            results: dict[int, dict[str, float]] = {}
            with httpx.Client(base_url=base, timeout=600) as client:

                def one(i: int) -> None:
                    r = client.post(
                        "/v1/images/generations",
                        headers={"Authorization": f"Bearer {key}"},
                        json={
                            "model": "demo-tiny",
                            # a new text each time: the prompt encoder caches texts
                            "prompt": f"{PROMPTS[i % len(PROMPTS)]}, study {i}",
                            "size": args.size,
                            "steps": args.steps,
                            "seed": i,
                        },
                    )
                    if r.status_code != 200:
                        raise RuntimeError(f"{r.status_code}: {r.text[:300]}")
                    return str(r.json()["governance"]["decision_id"])

                for i in range(3):
                    one(10_000 + i)  # warm the HTTP path
                for c in args.concurrency:
                    progress(f"governed: {args.requests} requests at concurrency {c}")
                    results[c] = run_concurrent(args.requests, c, one)
                    ids = results[c].pop("returned")
                    results[c]["stages_ms"] = stage_medians(Path(tmp) / "data" / "gateway.db", ids)
        return results, limit


# -- in-process generation service (SD shapes, GPU) ----------------------------------------


def governed_service(
    args: argparse.Namespace,
) -> tuple[dict[int, dict[str, float]], dict[str, Any]]:
    from functools import partial

    from shapes import build_pipeline

    from gateway.generation.batching import Batcher, ImageJob, image_seeds
    from gateway.generation.loader import LoadedModel
    from gateway.generation.run import batch_key, run_batch
    from gateway.provenance import encode_png
    from gateway.safety.image_classifier import CompositeImageClassifier
    from gateway.safety.image_nsfw import OpenNsfwDetector

    limit = bare(args, sorted({1, args.max_batch}), None)
    width, height = (int(v) for v in args.size.split("x"))
    batcher = Batcher(
        args.shape,
        torch_threads=args.threads,
        max_batch=args.max_batch,
        max_wait_s=(args.max_wait_ms or 10.0) / 1000,
        max_waiting_images=4 * args.requests,
    )
    pipe = batcher.call(
        partial(build_pipeline, args.shape, device=args.device, dtype=args.dtype)
    ).result()
    loaded = LoadedModel(args.shape, None, pipe, "", Path("."))  # type: ignore[arg-type]
    if args.compile:
        import torch

        mode = "reduce-overhead" if args.device.startswith("cuda") else "default"
        pipe.unet = torch.compile(pipe.unet, mode=mode)
    batcher.set_runner(partial(run_batch, loaded))
    scorer = CompositeImageClassifier(OpenNsfwDetector(), None)
    key = batch_key(loaded, width, height, args.steps)

    def one(i: int) -> None:
        job = ImageJob(key, PROMPTS[i % 4], None, image_seeds(i, 1), time.monotonic() + 3600)
        job.scorer = scorer
        out = batcher.submit(job).result()
        scored = out.scored.result()
        if scored.scores is None:
            raise RuntimeError(scored.error)
        for image in out.images:
            encode_png(image)

    progress("warming up every batch size (compiles when --compile)")
    for b in range(1, args.max_batch + 1):
        run_concurrent(b, b, one)
    results = {}
    for c in args.concurrency:
        progress(f"service: {args.requests} requests at concurrency {c}")
        results[c] = run_concurrent(args.requests, c, one)
        results[c].pop("returned")
    batcher.stop()
    return results, limit


def main(argv: Sequence[str] | None = None) -> int:
    from shapes import SHAPES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--shape", choices=SHAPES, default="demo-tiny")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, action="append", default=None)
    parser.add_argument("--size", default=None, help="default 64x64 (demo-tiny), 512x512, 1024")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-batch", type=int, default=8, help="bare batched size to compare")
    parser.add_argument("--max-wait-ms", type=float, default=None)
    parser.add_argument(
        "--gateway-max-batch",
        type=int,
        default=None,
        help="the gateway's max_batch for demo-tiny (default: the registry's, 8)",
    )
    parser.add_argument("--bare-images", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads, bare and gateway alike"
    )
    args = parser.parse_args(argv)
    args.concurrency = args.concurrency or [1, 8]
    args.size = args.size or {"demo-tiny": "64x64", "sd15": "512x512"}.get(args.shape, "1024x1024")

    load = os.getloadavg()[0]
    if args.shape == "demo-tiny":
        results, limit = governed_http(args)
        where = "gateway over HTTP (uvicorn subprocess)"
    else:
        results, limit = governed_service(args)
        where = "generation service in-process (batcher, pipeline, open_nsfw, PNG)"
    batches = limit["batches"]
    seq = batches["1"]["images_per_s"]
    batched = batches[str(args.max_batch)]["images_per_s"]
    print()
    print(f"Throughput: {args.shape} {args.size}, {args.steps} steps, {args.device} {args.dtype}")
    print(f"load average at start {load:.1f}; torch threads (bare) {limit['threads']}")
    print(f"{'path':<58}{'images/s':>10}{'p50 ms':>10}{'p95 ms':>10}")
    print("-" * 88)
    print(f"{'bare, clean process, one image per call':<58}{seq:>10.2f}")
    print(f"{f'bare, clean process, batch {args.max_batch}':<58}{batched:>10.2f}")
    for c, r in results.items():
        label = f"{where}, c={c}"
        print(f"{label:<58}{r['images_per_s']:>10.2f}{r['p50_ms']:>10.1f}{r['p95_ms']:>10.1f}")
    bare_ms = batches["1"]["s_per_call"] * 1000
    for c, r in results.items():
        if r.get("stages_ms"):
            stages = ", ".join(f"{k} {v}" for k, v in r["stages_ms"].items())
            print(f"  c={c} medians (decision records): {stages}")
    for c, r in results.items():
        stages = r.get("stages_ms") or {}
        if "generator" not in stages or c < 2:
            continue
        # A closed loop of c clients: each request's cycle is its time in the generator plus
        # its time outside it (HTTP, auth, decision writes, classifiers, provenance), so even a
        # generator that never waits for a batch to fill cannot beat c / (call + outside).
        outside = r["p50_ms"] - stages.get("queue", 0.0) - stages["generator"]
        call = batches[str(min(c, args.max_batch))]["s_per_call"] * 1000
        ceiling = c / ((call + outside) / 1000)
        print(
            f"  c={c}: median time outside the generator {outside:.0f} ms per request; closed-loop"
            f" ceiling c / (bare batch-{min(c, args.max_batch)} call {call:.0f} ms + outside)"
            f" = {ceiling:.1f} images/s ({ceiling / batched:.2f} x bare batch {args.max_batch})"
        )
    print()
    if max(results) >= args.max_batch:
        top = results[max(results)]["images_per_s"]
        print(f"governed c={max(results)} / bare batch {args.max_batch}: {top / batched:.2f}")
    if 1 in results and len(results) > 1:
        top = results[max(results)]["images_per_s"]
        print(f"governed c={max(results)} / governed c=1: {top / results[1]['images_per_s']:.2f}")
    if 1 in results:
        print(f"governed c=1 p50 latency / bare call: {results[1]['p50_ms'] / bare_ms:.2f}")
    print(json.dumps({"bare": limit, "governed": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
