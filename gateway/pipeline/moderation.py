"""Moderation on its own: the same classifiers and thresholds as the generation path.

``results[i]`` follows OpenAI's moderation object: ``flagged``, ``categories`` (true where
the category reaches the policy's ``block_at`` for prompts, i.e. where a generation request
would be refused), ``category_scores``, plus ``category_severities``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from gateway.domain import CATEGORIES, Assessment, Direction
from gateway.policy.content import judge_image, judge_text
from gateway.policy.schema import ContentPolicy
from gateway.safety.image_classifier import ImageClassifier
from gateway.safety.prompt_classifier import PromptClassifier


def moderation_result(assessment: Assessment) -> dict[str, Any]:
    withheld = set(assessment.details.get("blocked_categories", [])) | set(
        assessment.details.get("quarantined_categories", [])
    )
    return {
        "flagged": bool(withheld),
        "categories": {c: c in withheld for c in CATEGORIES},
        "category_scores": {c: round(float(assessment.scores[c]), 6) for c in CATEGORIES},
        "category_severities": {c: assessment.severities[c].value for c in CATEGORIES},
    }


def moderate_texts(
    classifier: PromptClassifier, policy: ContentPolicy, texts: Sequence[str]
) -> list[dict[str, Any]]:
    scores = classifier.classify(texts)
    if len(scores) != len(texts):
        raise RuntimeError("the prompt classifier returned the wrong number of results")
    return [moderation_result(judge_text(policy, s, Direction.PROMPT)) for s in scores]


def moderate_images(
    classifier: ImageClassifier, policy: ContentPolicy, images: Sequence[Image.Image]
) -> list[dict[str, Any]]:
    scores = classifier.classify(images)
    if len(scores) != len(images):
        raise RuntimeError("the image classifier returned the wrong number of results")
    return [moderation_result(judge_image(policy, s)) for s in scores]
