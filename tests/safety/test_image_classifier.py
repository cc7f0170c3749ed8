from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from gateway.domain import CATEGORIES
from gateway.safety.image_classifier import CompositeImageClassifier, ImageClassifier
from gateway.safety.image_concepts import ClipConceptChecker, Concept
from gateway.safety.image_nsfw import OpenNsfwDetector
from tests.tiny_clip import build_tiny_clip


@pytest.fixture(scope="module")
def nsfw() -> OpenNsfwDetector:
    return OpenNsfwDetector(intra_op_num_threads=1)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip_cls"))


IMAGES = [Image.new("RGB", (64, 64), "white"), Image.new("RGB", (40, 30), (10, 120, 10))]


def test_nsfw_only_scores_every_category(nsfw: OpenNsfwDetector) -> None:
    classifier: ImageClassifier = CompositeImageClassifier(nsfw=nsfw, concepts=None)
    out = classifier.classify(IMAGES)
    expected = nsfw.score(IMAGES)
    assert len(out) == 2
    for scores, p in zip(out, expected, strict=True):
        assert set(scores.scores) == set(CATEGORIES)
        assert scores.scores["sexual"] == pytest.approx(p)
        assert all(v == 0.0 for k, v in scores.scores.items() if k != "sexual")
        assert scores.detectors == {"open_nsfw": {"nsfw": p}}
        assert scores.fired == {}


def test_both_detectors_merge(nsfw: OpenNsfwDetector, clip_dir: Path) -> None:
    concepts = ClipConceptChecker(
        clip_dir,
        [
            Concept("a violent scene", "violence", -2.0),
            Concept("explicit nudity", "sexual", 2.0),
            Concept("a young child", "sexual/minors", 2.0, special_care=True),
        ],
    )
    out = CompositeImageClassifier(nsfw=nsfw, concepts=concepts).classify(IMAGES)
    raw = concepts.check(IMAGES)
    for scores, r, p in zip(out, raw, nsfw.score(IMAGES), strict=True):
        assert set(scores.scores) == set(CATEGORIES)
        assert all(0.0 <= v <= 1.0 for v in scores.scores.values())
        # concepts act through "fired"; only open_nsfw contributes a calibrated score
        assert scores.scores["violence"] == 0.0
        assert scores.scores["sexual"] == pytest.approx(p)
        sims = scores.detectors["clip_concepts"]["similarities"]
        assert sims["a violent scene"] == pytest.approx(r.similarities["a violent scene"], abs=1e-4)
        assert scores.fired == {"violence": ["a violent scene"]}
        assert scores.detectors["open_nsfw"] == {"nsfw": p}
        assert scores.detectors["clip_concepts"]["special_care"] == []
        assert set(scores.detectors["clip_concepts"]["margins"]) == {
            "violence",
            "sexual",
            "sexual/minors",
        }


def test_requires_a_detector() -> None:
    with pytest.raises(ValueError, match="at least one detector"):
        CompositeImageClassifier(nsfw=None, concepts=None)


def test_unknown_concept_category_rejected(clip_dir: Path) -> None:
    concepts = ClipConceptChecker(clip_dir, [Concept("x", "not-a-category", 0.3)])
    with pytest.raises(ValueError, match="not-a-category"):
        CompositeImageClassifier(nsfw=None, concepts=concepts)
