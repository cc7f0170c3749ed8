"""The invisible watermark: robustness on generated images, false positives on foreign ones."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from gateway.provenance.manifest import training_mining
from gateway.provenance.watermark import MIN_SIDE, TooSmall, Watermarker

KEY = bytes(range(32))


def _reencode(fmt: str, **options: int) -> Callable[[Image.Image], Image.Image]:
    def attack(image: Image.Image) -> Image.Image:
        out = io.BytesIO()
        image.save(out, format=fmt, **options)
        return Image.open(io.BytesIO(out.getvalue())).convert("RGB")

    return attack


ATTACKS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "none": lambda im: im,
    "jpeg_q90": _reencode("JPEG", quality=90),
    "jpeg_q75": _reencode("JPEG", quality=75),
    "resize_0.75": lambda im: im.resize(
        (im.width * 3 // 4, im.height * 3 // 4), Image.Resampling.LANCZOS
    ),
    "png_to_webp": _reencode("WEBP"),
    "crop_90pc": lambda im: im.crop(
        (im.width // 20, im.height // 20, im.width * 19 // 20, im.height * 19 // 20)
    ),
}
EXPECTED_TO_SURVIVE = {"none", "jpeg_q90", "jpeg_q75", "resize_0.75", "png_to_webp"}


@pytest.fixture(scope="module")
def demo_tiny_images(model_dir: Path) -> list[Image.Image]:
    """Unmarked demo-tiny images at the new sizes, straight from the pipeline."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(model_dir / "demo-tiny"))
    pipe.set_progress_bar_config(disable=True)
    images: list[Image.Image] = []
    for size, seed in ((256, 1), (512, 2)):
        out = pipe(
            prompt="a harbour at night",
            num_images_per_prompt=2,
            width=size,
            height=size,
            num_inference_steps=1,
            generator=torch.Generator().manual_seed(seed),
            output_type="pil",
        )
        images += list(out.images)
    return images


def _synthetic(rng: np.random.Generator, i: int) -> Image.Image:
    """One of several families of natural-ish images, at several sizes and aspect ratios."""
    w, h = [(256, 256), (320, 320), (384, 288), (512, 512), (640, 480), (300, 420)][i % 6]
    kind = i % 8
    if kind == 0:  # white noise
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if kind == 1:  # gaussian noise around a colour
        base = rng.uniform(40, 215, 3)
        return Image.fromarray(np.clip(rng.normal(base, 25, (h, w, 3)), 0, 255).astype(np.uint8))
    if kind in (2, 3):  # smooth random fields (clouds, blurry photos)
        cells = int(rng.integers(3, 40))
        small = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
        return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    if kind == 4:  # linear gradient at a random angle between two colours
        angle = rng.uniform(0, np.pi)
        y, x = np.mgrid[0:h, 0:w]
        t = (x * np.cos(angle) + y * np.sin(angle)).astype(np.float64)
        t = (t - t.min()) / (np.ptp(t) + 1e-9)
        a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        return Image.fromarray((a + (b - a) * t[..., None]).astype(np.uint8))
    if kind == 5:  # stripes and checkerboards
        period = int(rng.integers(2, 64))
        y, x = np.mgrid[0:h, 0:w]
        pattern = ((x // period + (y // period) * int(rng.integers(0, 2))) % 2) * 255
        return Image.fromarray(np.repeat(pattern[..., None], 3, axis=2).astype(np.uint8))
    # shapes on a background, softened like a photo (and JPEG-compressed for kind 7)
    image = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(5, 40))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = (x0, y0, x0 + int(rng.integers(5, w // 2)), y0 + int(rng.integers(5, h // 2)))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 3))))
    return ATTACKS["jpeg_q75"](image) if kind == 7 else image


def foreign_images(demo: list[Image.Image], count: int) -> Iterator[Image.Image]:
    rng = np.random.default_rng(20261130)
    yield from demo
    for i in range(count - len(demo)):
        yield _synthetic(rng, i)


def test_no_false_positives_on_foreign_images(demo_tiny_images: list[Image.Image]) -> None:
    marker = Watermarker(KEY)
    total, claimed = 0, 0
    for image in foreign_images(demo_tiny_images, 240):
        for variant in (image, ATTACKS["jpeg_q90"](image)):
            total += 1
            claimed += marker.read(variant).detected
    print(f"\nwatermark false positives: {claimed} of {total} foreign images")
    assert total >= 200
    assert claimed == 0


def test_robustness_on_generated_images(demo_tiny_images: list[Image.Image]) -> None:
    marker = Watermarker(KEY)
    payloads = ["0123456789abcdef", "fedcba9876543210", "00000000ffffffff", "a5a5a5a55a5a5a5a"]
    survived = dict.fromkeys(ATTACKS, 0)
    psnr: list[float] = []
    for image, payload in zip(demo_tiny_images, payloads, strict=True):
        marked = marker.embed(image, payload)
        diff = np.asarray(marked, dtype=float) - np.asarray(image.convert("RGB"), dtype=float)
        psnr.append(10 * np.log10(255**2 / np.mean(diff**2)))
        for name, attack in ATTACKS.items():
            survived[name] += marker.read(attack(marked)).payload == payload
    n = len(demo_tiny_images)
    print(f"\nwatermark PSNR {min(psnr):.1f}-{max(psnr):.1f} dB; decoded of {n}: {survived}")
    assert min(psnr) > 40
    assert all(survived[name] == n for name in EXPECTED_TO_SURVIVE), survived


def test_images_below_the_minimum_are_refused_not_silently_unmarked() -> None:
    with pytest.raises(TooSmall):
        Watermarker(KEY).embed(Image.new("RGB", (MIN_SIDE - 1, 512)), "0123456789abcdef")


def test_another_key_reads_nothing() -> None:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize(
        (384, 384), Image.Resampling.BICUBIC
    )
    marked = Watermarker(KEY).embed(image, "0123456789abcdef")
    assert Watermarker(KEY).read(marked).payload == "0123456789abcdef"
    assert Watermarker(bytes(32)).read(marked).detected is False


def test_training_mining_follows_the_rights() -> None:
    entries = training_mining({"may_train_other_models": False})["entries"]
    assert entries["cawg.ai_training"] == {"use": "notAllowed"}
    assert entries["cawg.ai_inference"] == {"use": "allowed"}
    inherit = {
        "may_train_other_models": True,
        "derivatives_inherit_restrictions": True,
        "licence": {"id": "creativeml-openrail-m"},
    }
    entries = training_mining(inherit)["entries"]
    assert entries["cawg.ai_generative_training"]["use"] == "constrained"
    assert "creativeml-openrail-m" in entries["cawg.ai_generative_training"]["constraint_info"]
    plain = {"may_train_other_models": True, "use_restrictions": []}
    assert training_mining(plain)["entries"]["cawg.data_mining"] == {"use": "allowed"}
