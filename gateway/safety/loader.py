"""Loading the safety classifiers from their pinned artefacts, once, at start.

Every artefact is checked against its pin (``artefacts.py``) before it is loaded. One that is
missing, unpinned, mismatching or unloadable does not stop the start: it is recorded in
``Models.problems``, and the stage that needs it is built as an ``UnavailableStage`` that
refuses every call (the request gets 503 ``safety_system_unavailable``, and ``/readyz`` 503).
There is no fallback to a weaker classifier: without its head the prompt stage does not run
on terms and exemplars alone. The one fallback allowed, ONNX → PyTorch for the prompt
encoder, computes the same embeddings and is logged (``text_encoder.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.policy.bundle import PolicyBundle
from gateway.safety.artefacts import (
    CLIP_FILES,
    ENCODER_FILES,
    ArtefactUnavailable,
    StageArtefacts,
    bundled_pins,
    read_verified,
    verify_folder,
)
from gateway.safety.image_classifier import CompositeImageClassifier, ImageClassifier
from gateway.safety.image_concepts import ClipConceptChecker, Concept
from gateway.safety.image_nsfw import OpenNsfwDetector, bundled_model_path
from gateway.safety.prompt_classifier import PolicyPromptClassifier, PromptClassifier, TextEncoder
from gateway.safety.prompt_head import PromptHead, default_head_path
from gateway.safety.text_encoder import MiniLMEncoder, default_encoder_dir
from gateway.settings import Settings

log = logging.getLogger(__name__)
PROMPT_ARTEFACTS = ("prompt_encoder", "prompt_encoder_onnx", "prompt_head")
IMAGE_ARTEFACTS = ("open_nsfw", "clip")


@dataclass(frozen=True)
class Models:
    """The heavy, policy-independent models; tests build them once and share them.

    ``artefacts``: sha256 of every artefact loaded; ``problems``: why the others are not.
    """

    encoder: TextEncoder | None
    nsfw: OpenNsfwDetector | None
    head: PromptHead | None
    artefacts: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def stage(self, names: Sequence[str]) -> StageArtefacts:
        return StageArtefacts(
            {n: s for n, s in self.artefacts.items() if n in names},
            {n: p for n, p in self.problems.items() if n in names},
        )


class UnavailableStage:
    """Stands in for a classifier whose artefacts failed their check: every call refuses."""

    def __init__(self, stage: str, artefacts: StageArtefacts) -> None:
        self.stage = stage
        self.artefacts = artefacts

    def classify(self, items: Sequence[Any]) -> list[Any]:
        name, why = sorted(self.artefacts.problems.items())[0]
        raise ArtefactUnavailable(name, why)


def load_models(settings: Settings) -> Models:
    """Check and load the prompt encoder, the prompt head and open_nsfw (hashing each once)."""
    artefacts: dict[str, str] = {}
    problems: dict[str, str] = {}
    encoder = _attempt("prompt_encoder", problems, lambda: _encoder(settings, artefacts))
    head = _attempt("prompt_head", problems, lambda: _head(settings, artefacts))
    nsfw = (
        _attempt("open_nsfw", problems, lambda: load_nsfw(artefacts))
        if settings.nsfw_detector
        else None
    )
    for name, why in sorted(problems.items()):
        log.error("safety artefact %s is unavailable, so its stage refuses requests: %s", name, why)
    return Models(encoder=encoder, nsfw=nsfw, head=head, artefacts=artefacts, problems=problems)


def _attempt(name: str, problems: dict[str, str], load: Any) -> Any:
    try:
        return load()
    except ArtefactUnavailable as exc:
        problems[exc.artefact] = exc.reason
    except Exception as exc:  # a pinned file that still fails to load: the stage is off
        problems[name] = f"could not be loaded: {type(exc).__name__}: {exc}"
    return None


def _encoder(settings: Settings, artefacts: dict[str, str]) -> MiniLMEncoder:
    checked = verify_folder(
        "prompt_encoder",
        settings.prompt_encoder_dir or default_encoder_dir(),
        ENCODER_FILES,
        pins=bundled_pins("prompt_encoder"),
        combined=settings.prompt_encoder_sha256,
        setting="GATEWAY_PROMPT_ENCODER_SHA256",
    )
    encoder = MiniLMEncoder(
        checked.path,
        backend=settings.prompt_encoder_backend,
        onnx_cache_dir=settings.data_dir / "cache",
        weights_sha256=checked.files.get("model.safetensors"),
    )
    artefacts["prompt_encoder"] = checked.sha256
    if encoder.onnx_sha256 is not None:
        artefacts["prompt_encoder_onnx"] = encoder.onnx_sha256
    return encoder


def _head(settings: Settings, artefacts: dict[str, str]) -> PromptHead:
    path = settings.prompt_head or default_head_path()
    pins = bundled_pins("prompt_head")
    expected = settings.prompt_head_sha256 or pins.get(default_head_path().name)
    data = read_verified("prompt_head", path, expected, "GATEWAY_PROMPT_HEAD_SHA256")
    head = PromptHead.from_bytes(data, str(path))
    artefacts["prompt_head"] = str(expected)
    return head


def load_nsfw(artefacts: dict[str, str] | None = None) -> OpenNsfwDetector:
    """open_nsfw, its file checked against ``pins.json``; its sha256 goes in ``artefacts``."""
    path = bundled_model_path()
    expected = bundled_pins("open_nsfw").get(path.name)
    read_verified("open_nsfw", path, expected, "pins.json")
    # one ONNX Runtime thread: no intra-op pool, so no threads spinning between runs on the
    # cores the generator's owner thread needs (it scores batches while the next one runs)
    detector = OpenNsfwDetector(intra_op_num_threads=1)  # the package checks its own pin too
    if artefacts is not None:
        artefacts["open_nsfw"] = str(expected)
    return detector


def build_prompt_classifier(
    bundle: PolicyBundle, encoder: TextEncoder | None, head: PromptHead | None
) -> PromptClassifier:
    """The policy's prompt classifier; both the encoder and the trained head are required."""
    if encoder is None or head is None:
        missing = "prompt_encoder" if encoder is None else "prompt_head"
        raise ArtefactUnavailable(missing, "not loaded")
    return PolicyPromptClassifier(encoder, bundle.content, head)


def build_prompt_stage(
    bundle: PolicyBundle, models: Models
) -> tuple[PromptClassifier, StageArtefacts]:
    """The policy's prompt classifier, or an ``UnavailableStage`` if an artefact failed."""
    stage = models.stage(PROMPT_ARTEFACTS)
    if not stage.available or models.encoder is None or models.head is None:
        return UnavailableStage("prompt_classifier", stage), stage
    return build_prompt_classifier(bundle, models.encoder, models.head), stage


def build_image_classifier(
    settings: Settings, bundle: PolicyBundle, nsfw: OpenNsfwDetector | None
) -> ImageClassifier:
    """The image classifier with this detector; raises ``ArtefactUnavailable`` on a problem."""
    classifier, stage = build_image_stage(settings, bundle, Models(None, nsfw, None))
    if not stage.available:
        name, why = sorted(stage.problems.items())[0]
        raise ArtefactUnavailable(name, why)
    return classifier


def build_image_stage(
    settings: Settings, bundle: PolicyBundle, models: Models
) -> tuple[ImageClassifier, StageArtefacts]:
    """open_nsfw and (with ``clip_dir``) the concept checker, whose folder is checked here.

    The CLIP folder is hashed each time the checker is built (at start, and when a policy
    version with other concepts comes into force), just before open_clip reads it.
    """
    base = models.stage(IMAGE_ARTEFACTS)
    sha, problems = dict(base.sha256), dict(base.problems)
    image_policy = bundle.content.image
    concepts = None
    if settings.clip_dir is not None:
        try:
            checked = verify_folder(
                "clip",
                settings.clip_dir,
                CLIP_FILES,
                pins={},
                combined=settings.clip_sha256,
                setting="GATEWAY_CLIP_SHA256",
            )
            concepts = ClipConceptChecker(
                settings.clip_dir,
                [
                    Concept(c.text, c.category, c.threshold, c.special_care)
                    for c in image_policy.concepts
                ],
                special_care_adjustment=image_policy.special_care_adjustment,
            )
            sha["clip"] = checked.sha256
        except ArtefactUnavailable as exc:
            problems["clip"] = exc.reason
        except (OSError, RuntimeError) as exc:
            problems["clip"] = f"could not be loaded: {type(exc).__name__}: {exc}"
    stage = StageArtefacts(sha, problems)
    if not stage.available:
        for name, why in sorted(problems.items()):
            log.error("safety artefact %s is unavailable: %s", name, why)
        return UnavailableStage("image_classifier", stage), stage
    classifier = CompositeImageClassifier(
        models.nsfw, concepts, image_policy.nsfw_detector_category
    )
    return classifier, stage
