from __future__ import annotations

from collections.abc import Iterator

import pytest
from PIL import Image

from gateway.safety.image_nsfw import OpenNsfwDetector


@pytest.fixture(scope="module")
def detector() -> Iterator[OpenNsfwDetector]:
    yield OpenNsfwDetector(intra_op_num_threads=1)


def test_solid_colour_images_score_low(detector: OpenNsfwDetector) -> None:
    images = [Image.new("RGB", (256, 256), c) for c in ("white", (30, 90, 200), "black")]
    scores = detector.score(images)
    assert len(scores) == 3
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert all(s < 0.2 for s in scores), scores


def test_empty_input_and_non_rgb(detector: OpenNsfwDetector) -> None:
    assert detector.score([]) == []
    (score,) = detector.score([Image.new("L", (64, 48), 128)])
    assert 0.0 <= score <= 1.0
    assert detector.name == "open_nsfw"
