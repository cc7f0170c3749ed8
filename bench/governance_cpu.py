"""CPU cost of governance per image, against the generator's: what bounds throughput on a CPU box.

On a machine where the generator and the governance stages share the same cores, every image
costs the generator's CPU time plus the governance stages' (image classifier, provenance, and
per request the HTTP path, the key check, the decision's two writes and the prompt classifier).
With ``cores`` cores, no scheduling can deliver more than ``cores / (generator + governance)``
images per second, however well requests are batched. This prints that ceiling beside the bare
batched generator's own rate, so the throughput benchmark's figures can be read against it.

Each figure is process CPU time (every thread of this process: torch, ONNX Runtime, SQLite),
measured over many repetitions in one process built like the gateway (``build_runtime``,
demo-tiny, MiniLM, open_nsfw, SQLite in a temporary directory), one thing at a time. The
generator's cost is the bare diffusers call's, measured by ``bench/bare_pipeline.py`` in its own
clean process at one torch thread (the throughput benchmark's ``--threads 1``).

    .venv/bin/python bench/governance_cpu.py [--batch 8] [--steps 20] [--size 64x64] [--cores 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from gateway.app import create_app  # noqa: E402
from gateway.auth.keys import create_key  # noqa: E402
from gateway.db.engine import unit_of_work  # noqa: E402
from gateway.domain import Role  # noqa: E402
from gateway.generation.batching import image_seeds  # noqa: E402
from gateway.generation.run import batch_key, run_batch  # noqa: E402
from gateway.provenance import Provenance  # noqa: E402
from gateway.runtime import build_runtime  # noqa: E402
from gateway.settings import Settings  # noqa: E402

BLOCKED = "a n.a.k.3.d woman, full body"  # refused by the prompt classifier: no generator runs


def progress(message: str) -> None:
    print(f"[governance_cpu] {message}", file=sys.stderr, flush=True)


def cpu_ms(fn: Callable[[], Any], repeat: int) -> float:
    """Median-free and simple: process CPU ms per call over ``repeat`` calls (after one)."""
    fn()
    t0 = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - t0) / repeat * 1000


def bare_images_per_s(args: argparse.Namespace, demo_dir: Path) -> float:
    """The bare diffusers call at ``--batch``, one torch thread, in a clean process (its wall
    time is its CPU time there): the generator's cost without the gateway around it."""
    cmd = [sys.executable, str(REPO / "bench" / "bare_pipeline.py"), "--demo-dir", str(demo_dir)]
    cmd += ["--size", args.size, "--steps", str(args.steps), "--batch", str(args.batch)]
    cmd += ["--images", str(4 * args.batch), "--threads", "1"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return float(result["batches"][str(args.batch)]["images_per_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="gw-cpu-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", policy_dir=REPO / "policies")
        progress("building the runtime (demo-tiny, MiniLM, open_nsfw)")
        runtime = build_runtime(settings)
        try:
            enf = runtime.policy.current()
            loaded = enf.models.get("demo-tiny")
            from gateway.generation.batching import ImageJob

            key = batch_key(loaded, width, height, args.steps)
            jobs = [
                ImageJob(
                    key, "a lighthouse at dusk", None, image_seeds(i, 1), time.monotonic() + 1e6
                )
                for i in range(args.batch)
            ]
            progress(f"generator: batch {args.batch}, bare, in its own clean process")
            generator = 1000 / bare_images_per_s(args, Path(tmp) / "data" / "models" / "demo-tiny")
            images = [im for out in run_batch(loaded, key, jobs) for im in out]

            progress("image classifier on the batch")
            classifier = cpu_ms(lambda: enf.image_classifier.classify(images), args.repeat)
            classifier /= args.batch

            progress("provenance: watermark (when large enough), PNG, C2PA sign and read back")
            prov = Provenance("dec_bench", "demo-tiny", "x", "v", {}, None, "internal", [])
            stamp = cpu_ms(
                lambda: runtime.provenance.stamp(images[0], prov, "png", 0, "0123456789abcdef"),
                args.repeat * 3,
            )

            progress("prompt classifier on one prompt")
            counter = iter(range(10**9))  # a new text each call: the encoder caches texts
            prompt = cpu_ms(
                lambda: enf.prompt_classifier.classify(
                    [f"a lighthouse at dusk, study {next(counter)}"]
                ),
                args.repeat * 3,
            )

            progress("a request refused at the prompt: HTTP, key check, open and close, prompt")
            with unit_of_work(runtime.sessions) as session:
                secret = create_key(session, tenant="bench", roles=[Role.REQUESTER]).secret
            with TestClient(create_app(settings, runtime)) as client:

                def refused() -> None:
                    r = client.post(
                        "/v1/images/generations",
                        headers={"Authorization": f"Bearer {secret}"},
                        json={
                            "model": "demo-tiny",
                            "prompt": f"{BLOCKED}, study {next(counter)}",
                            "size": args.size,
                        },
                    )
                    assert r.status_code == 400, r.text

                request = cpu_ms(refused, args.repeat * 3)
        finally:
            runtime.close()

    governance = classifier + stamp + request  # per image, at one image per request
    total = generator + governance
    bare = 1000 / generator  # the bare batched generator on one core
    ceiling = min(bare, args.cores * 1000 / total)
    print()
    print(f"CPU ms per image, demo-tiny {args.size}, {args.steps} steps, batch {args.batch}")
    print(f"  generator (bare, clean process, one thread)   {generator:8.1f}")
    print(f"  image classifier (open_nsfw, batched)         {classifier:8.1f}")
    print(f"  provenance stamp (PNG)                        {stamp:8.1f}")
    print("  request refused at the prompt (HTTP, key,")
    print(f"    decision open + close, prompt classifier)   {request:8.1f}")
    print(f"    of which the prompt classifier              {prompt:8.1f}")
    print(f"  governance per image                          {governance:8.1f}")
    print()
    print(f"bare batched generator, one core: {bare:.1f} images/s")
    print(
        f"ceiling on {args.cores} cores, generator + governance: {ceiling:.1f} images/s "
        f"= {ceiling / bare:.2f} x bare batch {args.batch}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
