"""The bare diffusers pipeline, alone in its own clean process: the limit the gateway is held to.

Nothing of the gateway runs here: no server, no classifiers, no other threads. torch runs on
the main thread only. Prints one JSON line: images/s and seconds per call for each batch size.

    python bench/bare_pipeline.py --shape demo-tiny --demo-dir DIR --size 64x64 --steps 20 \
        --batch 1 --batch 8 --images 32 [--device cuda --dtype float16] [--compile]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from shapes import SHAPES, build_pipeline  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--shape", choices=SHAPES, default="demo-tiny")
    parser.add_argument("--demo-dir", type=Path, default=None)
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, action="append", default=None)
    parser.add_argument("--images", type=int, default=32, help="images per batch size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    pipe = build_pipeline(args.shape, device=args.device, dtype=args.dtype, demo_dir=args.demo_dir)
    if args.compile:
        mode = "reduce-overhead" if args.device.startswith("cuda") else "default"
        pipe.unet = torch.compile(pipe.unet, mode=mode)

    def call(batch: int, seed: int) -> None:
        gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)]
        with torch.inference_mode():
            pipe(
                prompt=["a lighthouse on a rocky coast at dawn"] * batch,
                width=width,
                height=height,
                num_inference_steps=args.steps,
                generator=gens,
                output_type="pil",
            )
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    results = {}
    for batch in args.batch or [1, 8]:
        call(batch, 10_000)  # warm-up (and compile)
        calls = max(1, args.images // batch)
        call_ms = []
        t0 = time.perf_counter()
        for i in range(calls):
            c0 = time.perf_counter()
            call(batch, i * batch)
            call_ms.append(round((time.perf_counter() - c0) * 1000, 2))
        seconds = time.perf_counter() - t0
        results[str(batch)] = {
            "images_per_s": round(calls * batch / seconds, 3),
            "s_per_call": round(seconds / calls, 4),
            "calls": calls,
            "call_ms": call_ms,
        }
    print(json.dumps({"shape": args.shape, "threads": torch.get_num_threads(), "batches": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
