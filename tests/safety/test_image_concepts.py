from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gateway.safety.image_concepts import ClipConceptChecker, Concept
from tests.tiny_clip import build_tiny_clip


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))
    return [noise, Image.new("RGB", (32, 32), (200, 30, 30))]


def _concepts(threshold: float) -> list[Concept]:
    return [
        Concept("a violent scene", "violence", threshold),
        Concept("a gory wound", "violence", threshold),
        Concept("a hateful symbol", "hate", threshold),
        Concept("a young child", "sexual/minors", threshold, special_care=True),
    ]


def test_forced_detection_fires_every_concept(tiny_clip_dir: Path) -> None:
    checker = ClipConceptChecker(tiny_clip_dir, _concepts(-2.0))
    results = checker.check(_images())
    assert len(results) == 2
    for r in results:
        # the special-care concept lowers the bar but does not mark the image by itself
        assert r.fired == {
            "violence": ["a violent scene", "a gory wound"],
            "hate": ["a hateful symbol"],
        }
        assert r.special_care == ["a young child"]
        assert set(r.similarities) == {c.text for c in _concepts(0)}
        assert all(-1.0001 <= v <= 1.0001 for v in r.similarities.values())
        assert all(m > 0 for m in r.margins.values())


def test_high_thresholds_fire_nothing(tiny_clip_dir: Path) -> None:
    checker = ClipConceptChecker(tiny_clip_dir, _concepts(2.0))
    for r in checker.check(_images()):
        assert r.fired == {}
        assert r.special_care == []
        assert set(r.margins) == {"violence", "hate", "sexual/minors"}
        assert all(m < 0 for m in r.margins.values())
    assert checker.check([]) == []


def test_special_care_lowers_the_bar(tiny_clip_dir: Path) -> None:
    image = _images()[:1]
    probe = ClipConceptChecker(tiny_clip_dir, [Concept("a violent scene", "violence", 0.0)])
    cos = probe.check(image)[0].similarities["a violent scene"]
    # Just above the cosine: margin is negative alone, positive after +0.01.
    normal = Concept("a violent scene", "violence", round(cos, 3) + 0.005)

    def run(special_threshold: float) -> list[str]:
        special = Concept("a young child", "sexual/minors", special_threshold, special_care=True)
        result = ClipConceptChecker(tiny_clip_dir, [normal, special]).check(image)[0]
        # the same cosine, up to float rounding (texts encoded two at a time, not one)
        assert result.similarities["a violent scene"] == pytest.approx(cos, abs=1e-5)
        return result.fired.get("violence", [])

    assert run(2.0) == []
    assert run(-2.0) == ["a violent scene"]
    alone = ClipConceptChecker(tiny_clip_dir, [normal]).check(image)[0]
    assert alone.margins["violence"] <= 0.0
    assert alone.fired == {}


def test_missing_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_clip"
    with pytest.raises(FileNotFoundError, match="no_such_clip"):
        ClipConceptChecker(missing, _concepts(0.5))


def test_folder_without_weights_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "open_clip_config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"open_clip_model\.safetensors"):
        ClipConceptChecker(tmp_path, _concepts(0.5))


def test_duplicate_concept_texts_rejected(tiny_clip_dir: Path) -> None:
    dup = [Concept("x", "hate", 0.2), Concept("x", "violence", 0.2)]
    with pytest.raises(ValueError, match="unique"):
        ClipConceptChecker(tiny_clip_dir, dup)
