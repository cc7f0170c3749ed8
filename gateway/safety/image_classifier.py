"""Image classifier stage: open_nsfw and the open_clip concept checker, merged per category."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from PIL import Image

from gateway.domain import CATEGORIES, ImageScores
from gateway.safety.image_concepts import ClipConceptChecker, ConceptResult
from gateway.safety.image_nsfw import OpenNsfwDetector


class ImageClassifier(Protocol):
    def classify(self, images: Sequence[Image.Image]) -> list[ImageScores]: ...


def _clip01(x: float) -> float:
    return min(1.0, max(0.0, x))


class CompositeImageClassifier:
    """Runs every configured detector on every image; at least one detector is required."""

    def __init__(
        self,
        nsfw: OpenNsfwDetector | None,
        concepts: ClipConceptChecker | None,
        nsfw_category: str = "sexual",
    ) -> None:
        if nsfw is None and concepts is None:
            raise ValueError("an image classifier needs at least one detector (fail closed)")
        if nsfw_category not in CATEGORIES:
            raise ValueError(f"unknown nsfw category: {nsfw_category!r}")
        unknown = (
            sorted({c.category for c in concepts.concepts} - set(CATEGORIES)) if concepts else []
        )
        if unknown:
            raise ValueError(f"concepts use unknown categories: {unknown}")
        self.nsfw = nsfw
        self.concepts = concepts
        self.nsfw_category = nsfw_category

    def classify(self, images: Sequence[Image.Image]) -> list[ImageScores]:
        if not images:
            return []
        nsfw = self.nsfw.score(images) if self.nsfw else None
        concepts = self.concepts.check(images) if self.concepts else None
        return [
            self._merge(
                nsfw[i] if nsfw is not None else None,
                concepts[i] if concepts is not None else None,
            )
            for i in range(len(images))
        ]

    def _merge(self, p_nsfw: float | None, result: ConceptResult | None) -> ImageScores:
        scores = dict.fromkeys(CATEGORIES, 0.0)
        detectors: dict[str, dict[str, Any]] = {}
        fired: dict[str, list[str]] = {}
        if p_nsfw is not None:
            scores[self.nsfw_category] = _clip01(p_nsfw)
            detectors[OpenNsfwDetector.name] = {"nsfw": p_nsfw}
        if result is not None and self.concepts is not None:
            # Concepts act through ``fired`` (severity high); raw cosines are not on the
            # same scale as the category thresholds, so they are reported, not scored.
            detectors[ClipConceptChecker.name] = {
                "similarities": {k: round(v, 4) for k, v in result.similarities.items()},
                "margins": dict(result.margins),
                "special_care": list(result.special_care),
            }
            fired = {cat: list(texts) for cat, texts in result.fired.items() if texts}
        return ImageScores(scores=scores, detectors=detectors, fired=fired)
