"""The prompt classifier: normalised text → per-category scores in [0, 1].

Stages, on the de-obfuscated text:
1. the policy's term lists per category, matched on word boundaries (a hit scores 1.0);
2. the trained head (MiniLM embedding + TF-IDF logistic regressions, ``prompt_head.py``)
   for the categories it was trained on;
3. for the other categories (e.g. ``sexual/minors``, which the data does not label), MiniLM
   similarity to the policy's exemplar sentences, mapped onto 0..1 by
   ``content.exemplar_scale``.
The category score is the largest. Policy then turns scores into severities.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from gateway.domain import CATEGORIES, TextScores
from gateway.policy.schema import ContentPolicy
from gateway.safety.normalize import normalise, term_key
from gateway.safety.prompt_head import PromptHead


class TextEncoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class PromptClassifier(Protocol):
    def classify(self, texts: Sequence[str]) -> list[TextScores]: ...


def term_patterns(policy: ContentPolicy) -> dict[str, re.Pattern[str]]:
    """Per category, one regex over the normalised key matching any of its terms."""
    patterns: dict[str, re.Pattern[str]] = {}
    for cat in CATEGORIES:
        cp = policy.categories[cat]
        keys = sorted({term_key(t) for t in cp.terms if term_key(t)}, key=len, reverse=True)
        if keys:
            alternatives = "|".join(re.escape(k) for k in keys)
            patterns[cat] = re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])")
    return patterns


class PolicyPromptClassifier:
    """Term lists + exemplar similarity, both read from a ``ContentPolicy``."""

    def __init__(
        self, encoder: TextEncoder, policy: ContentPolicy, head: PromptHead | None = None
    ) -> None:
        self._encoder = encoder
        self._head = head
        trained = set(head.categories) if head is not None else set()
        self._low, self._high = policy.exemplar_scale
        self._patterns = term_patterns(policy)
        self._exemplars: dict[str, npt.NDArray[np.float32]] = {}
        exemplars = [  # categories the trained head covers do not need exemplars
            (c, normalise(e).clean)
            for c in CATEGORIES
            if c not in trained
            for e in policy.categories[c].exemplars
        ]
        if exemplars:
            vectors = encoder.encode([text for _, text in exemplars])  # one batch
            for cat in CATEGORIES:
                rows = [i for i, (c, _) in enumerate(exemplars) if c == cat]
                if rows:
                    self._exemplars[cat] = vectors[rows]

    def classify(self, texts: Sequence[str]) -> list[TextScores]:
        normalised = [normalise(t) for t in texts]
        embeddings = self._encoder.encode([n.clean for n in normalised]) if texts else None
        head = (
            self._head.score([n.clean for n in normalised], embeddings)
            if self._head is not None and embeddings is not None
            else None
        )
        results: list[TextScores] = []
        for i, norm in enumerate(normalised):
            scores: dict[str, float] = {}
            matched: dict[str, list[str]] = {}
            for cat in CATEGORIES:
                score = 0.0
                pattern = self._patterns.get(cat)
                if pattern is not None:
                    hits = sorted(set(pattern.findall(norm.key)))
                    if hits:
                        matched[cat] = hits
                        score = 1.0
                if head is not None:
                    score = max(score, float(head[i, CATEGORIES.index(cat)]))
                ex = self._exemplars.get(cat)
                if ex is not None and embeddings is not None:
                    cos = float(np.max(ex @ embeddings[i]))
                    score = max(score, self._scale(cos))
                scores[cat] = score
            results.append(
                TextScores(
                    text=norm.original,
                    normalised=norm.display,
                    scores=scores,
                    matched_terms=matched,
                )
            )
        return results

    def _scale(self, cos: float) -> float:
        return float(min(1.0, max(0.0, (cos - self._low) / (self._high - self._low))))
