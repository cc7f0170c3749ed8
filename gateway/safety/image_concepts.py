"""open_clip concept checker in the style of diffusers' ``StableDiffusionSafetyChecker``.

Each image embedding is compared (cosine) with the text embedding of every policy concept.
A concept fires when ``round(cos - threshold + adjustment, 3) > 0``. Special-care concepts are
evaluated first; once one fires, ``adjustment`` becomes ``special_care_adjustment`` for the
concepts evaluated after it, lowering their bar (the SD checker uses 0.01).
Concept texts and thresholds come from policy, never from code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from PIL import Image

CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES: tuple[str, ...] = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)


@dataclass(frozen=True)
class Concept:
    text: str
    category: str
    threshold: float
    special_care: bool = False


@dataclass(frozen=True)
class ConceptResult:
    similarities: dict[str, float]  # concept text -> cosine similarity
    margins: dict[str, float]  # category -> max over its concepts of round(cos - thr + adj, 3)
    fired: dict[str, list[str]] = field(default_factory=dict)  # category -> concept texts
    special_care: list[str] = field(default_factory=list)


def _check_model_dir(model_dir: Path) -> None:
    expected = f"{CONFIG_FILE} + weights (one of {', '.join(WEIGHT_FILES)} or *.pth)"
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"open_clip model folder not found: {model_dir} (expects {expected})"
        )
    has_weights = any((model_dir / n).is_file() for n in WEIGHT_FILES) or any(
        model_dir.glob("*.pth")
    )
    if not (model_dir / CONFIG_FILE).is_file() or not has_weights:
        raise FileNotFoundError(
            f"open_clip model folder {model_dir} is incomplete: expects {expected}"
        )


class ClipConceptChecker:
    """Thresholded cosine similarity between open_clip image and concept-text embeddings."""

    name = "clip_concepts"

    def __init__(
        self,
        model_dir: Path,
        concepts: Sequence[Concept],
        *,
        special_care_adjustment: float = 0.01,
    ) -> None:
        texts = [c.text for c in concepts]
        if len(set(texts)) != len(texts):
            raise ValueError("concept texts must be unique")
        model_dir = Path(model_dir)
        _check_model_dir(model_dir)
        uri = "local-dir:" + str(model_dir)
        model, _, preprocess = open_clip.create_model_and_transforms(
            uri, device="cpu", require_pretrained=True
        )
        self.model_dir = model_dir
        self.concepts: tuple[Concept, ...] = tuple(concepts)
        self.special_care_adjustment = special_care_adjustment
        self._model: Any = model.eval()
        self._preprocess: Callable[[Image.Image], torch.Tensor] = preprocess
        tokenizer = open_clip.get_tokenizer(uri)
        with torch.inference_mode():
            if texts:
                self._text_embeds = self._model.encode_text(tokenizer(texts), normalize=True)
            else:
                self._text_embeds = torch.empty(0)

    @property
    def categories(self) -> list[str]:
        return sorted({c.category for c in self.concepts})

    def _cosines(self, images: Sequence[Image.Image]) -> list[list[float]]:
        if not self.concepts:
            return [[] for _ in images]
        pixels = torch.stack([self._preprocess(im.convert("RGB")) for im in images])
        with torch.inference_mode():
            image_embeds = self._model.encode_image(pixels, normalize=True)
            cos = image_embeds.float() @ self._text_embeds.float().T
        rows: list[list[float]] = cos.tolist()
        return rows

    def check(self, images: Sequence[Image.Image]) -> list[ConceptResult]:
        if not images:
            return []
        return [self._judge(row) for row in self._cosines(images)]

    def _judge(self, cosines: list[float]) -> ConceptResult:
        pairs = list(zip(self.concepts, cosines, strict=True))
        margins: dict[str, float] = {}
        fired: dict[str, list[str]] = {}
        special_care: list[str] = []
        adjustment = 0.0

        def evaluate(concept: Concept, cos: float) -> bool:
            score = round(cos - concept.threshold + adjustment, 3)
            margins[concept.category] = max(margins.get(concept.category, score), score)
            # As in SD's checker, a special-care concept only lowers the bar for the others;
            # on its own it does not mark the image.
            if score > 0 and not concept.special_care:
                fired.setdefault(concept.category, []).append(concept.text)
            return score > 0

        for concept, cos in pairs:
            if concept.special_care and evaluate(concept, cos):
                special_care.append(concept.text)
                adjustment = self.special_care_adjustment
        for concept, cos in pairs:
            if not concept.special_care:
                evaluate(concept, cos)
        return ConceptResult(
            similarities={c.text: cos for c, cos in pairs},
            margins=margins,
            fired=fired,
            special_care=special_care,
        )
