"""A dozen generated training images, a per-test copy of demo-tiny, CLI environment."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image, ImageDraw

from gateway.runtime import Runtime


def make_images(folder: Path, count: int = 12) -> Path:
    """``count`` procedurally drawn images in two caption folders, one sidecar caption and
    one exact duplicate (so the manifest has something to report)."""
    for i in range(count):
        sub = folder / ("red_circle" if i % 2 else "blue square")
        sub.mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB", (80, 72), (250 - 9 * i, 240, 20 * i % 255))
        draw = ImageDraw.Draw(image)
        box = (8 + i, 6 + i, 60 + i, 58)
        if i % 2:
            draw.ellipse(box, fill=(220, 30, 30))
        else:
            draw.rectangle(box, fill=(30, 30, 220))
        image.save(sub / f"{i:02d}.png")
    (folder / "red_circle" / "01.txt").write_text("a red circle, brand style\n", encoding="utf-8")
    shutil.copy(folder / "blue square" / "00.png", folder / "blue square" / "00-copy.png")
    return folder


def private_model_dir(shared: Path, tmp_path: Path) -> Path:
    """A model folder of this test's own (adapters are written under it)."""
    own = tmp_path / "models"
    shutil.copytree(shared / "demo-tiny", own / "demo-tiny")
    return own


def cli_env(runtime: Runtime) -> dict[str, str]:
    s = runtime.settings
    return {
        "GATEWAY_DATA_DIR": str(s.data_dir),
        "GATEWAY_DATABASE_URL": s.resolved_database_url,
        "GATEWAY_MODEL_DIR": str(s.resolved_model_dir),
        "GATEWAY_POLICY_DIR": str(s.policy_dir),
    }
