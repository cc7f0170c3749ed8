"""Added latency of provenance at 512x512: watermark, C2PA signing and read-back.

Builds demo-tiny in a temporary folder (or, with ``--synthetic``, draws a photo-like image)
and makes one 512x512 image. Then, interleaved in the same run, it times N rounds of:

* ``plain``: the PNG encoding the gateway did before (text chunks, no manifest, no mark);
* ``watermark``: embedding the mark (with its decode check);
* ``sign``: signing the C2PA manifest into the encoded PNG (c2pa-python, offline);
* ``read_back``: reading the manifest back and validating it;
* ``stamp``: the whole stamp the gateway runs per image (all of the above, in order),
  for PNG, JPEG and WebP, each against its own plain encoding.

    .venv/bin/python bench/provenance.py [--rounds 30] [--synthetic]

Prints the medians in ms and the added latency (stamp - plain); the aim is <= 100 ms for PNG.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from gateway.provenance import Provenance, encode_png  # noqa: E402
from gateway.provenance.c2pa_io import read, sign  # noqa: E402
from gateway.provenance.manifest import build_manifest  # noqa: E402
from gateway.provenance.stamp import ProvenanceService, encode  # noqa: E402
from gateway.provenance.watermark import new_payload  # noqa: E402
from gateway.settings import Settings  # noqa: E402

SIZE = 512
PROVENANCE = Provenance(
    decision_id="dec_" + "0" * 32,
    model_id="demo-tiny",
    licence_id="apache-2.0",
    policy_version="0" * 64,
    rights={"may_train_other_models": True, "licence": {"id": "apache-2.0"}},
    weights_sha256="0" * 64,
    intended_use="research",
    lineage=["demo-tiny"],
)


def demo_tiny_image(folder: Path) -> Image.Image:
    import torch
    from diffusers import StableDiffusionPipeline

    from gateway.generation.demo_tiny import build_demo_tiny

    pipe = StableDiffusionPipeline.from_pretrained(str(build_demo_tiny(folder / "demo-tiny")))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        prompt="a lighthouse at dusk",
        width=SIZE,
        height=SIZE,
        num_inference_steps=1,
        generator=torch.Generator().manual_seed(0),
        output_type="pil",
    )
    image: Image.Image = out.images[0]
    return image


def synthetic_image() -> Image.Image:
    rng = np.random.default_rng(0)
    small = rng.uniform(0, 255, (12, 12, 3)).astype(np.uint8)
    image = Image.fromarray(small).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(30):
        x, y = (int(v) for v in rng.integers(0, SIZE, 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x, y, x + int(rng.integers(10, 150)), y + int(rng.integers(10, 150))), fill)
    noise = rng.normal(0, 6, (SIZE, SIZE, 3))
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(1.5)), dtype=float)
    return Image.fromarray(np.clip(blurred + noise, 0, 255).astype(np.uint8))


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--synthetic", action="store_true", help="skip building demo-tiny")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("making a 512x512 image ...", file=sys.stderr)
        image = synthetic_image() if args.synthetic else demo_tiny_image(folder)
        service = ProvenanceService.from_settings(Settings(data_dir=folder / "data"))
        creds = service.credentials
        payload = new_payload()
        manifest = build_manifest(PROVENANCE, 0, payload)
        marked = service.watermarker.embed(image, payload)
        png = encode(marked, "png", PROVENANCE)
        signed, _ = sign(png, "png", manifest, creds)
        steps: dict[str, Callable[[], object]] = {
            "plain_png": lambda: encode_png(image, PROVENANCE),
            "watermark": lambda: service.watermarker.embed(image, payload),
            "sign": lambda: sign(png, "png", manifest, creds),
            "read_back": lambda: read(signed, "image/png", creds.anchors_pem),
            "stamp_png": lambda: service.stamp(image, PROVENANCE, "png", 0, payload),
            "plain_jpeg": lambda: encode(image, "jpeg", None),
            "stamp_jpeg": lambda: service.stamp(image, PROVENANCE, "jpeg", 0, payload),
            "plain_webp": lambda: encode(image, "webp", None),
            "stamp_webp": lambda: service.stamp(image, PROVENANCE, "webp", 0, payload),
        }
        for fn in steps.values():  # warm-up (imports, key layout, c2pa library)
            fn()
        samples: dict[str, list[float]] = {name: [] for name in steps}
        names = list(steps)
        for i in range(args.rounds):
            order = names if i % 2 == 0 else names[::-1]
            for name in order:
                samples[name].append(timed(steps[name]))
        median = {name: statistics.median(values) for name, values in samples.items()}
    print(f"512x512, {args.rounds} rounds, median ms (os.cpu_count()={os.cpu_count()}):")
    for name, value in median.items():
        print(f"  {name:<11} {value:8.1f}")
    for fmt in ("png", "jpeg", "webp"):
        added = median[f"stamp_{fmt}"] - median[f"plain_{fmt}"]
        print(f"added by provenance ({fmt}): {added:.1f} ms")
    added_png = median["stamp_png"] - median["plain_png"]
    verdict = "met" if added_png <= 100 else "NOT met"
    print(f"aim (PNG added <= 100 ms): {verdict}")


if __name__ == "__main__":
    main()
