"""The prompt classifier: normalised text → per-category scores in [0, 1].

Two stages, both driven by the policy bundle:
1. term lists per category, matched on word boundaries in the de-obfuscated text
   (a hit scores 1.0);
2. MiniLM embeddings compared with the policy's exemplar sentences per category; the
   best cosine similarity is mapped linearly onto 0..1 by ``content.exemplar_scale``.
The category score is the larger of the two. Policy then turns scores into severities.
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


class TextEncoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class PromptClassifier(Protocol):
    def classify(self, texts: Sequence[str]) -> list[TextScores]: ...


class PolicyPromptClassifier:
    """Term lists + exemplar similarity, both read from a ``ContentPolicy``."""

    def __init__(self, encoder: TextEncoder, policy: ContentPolicy) -> None:
        self._encoder = encoder
        self._low, self._high = policy.exemplar_scale
        self._patterns: dict[str, re.Pattern[str]] = {}
        self._exemplars: dict[str, npt.NDArray[np.float32]] = {}
        for cat in CATEGORIES:
            cp = policy.categories[cat]
            keys = sorted({term_key(t) for t in cp.terms if term_key(t)}, key=len, reverse=True)
            if keys:
                alternatives = "|".join(re.escape(k) for k in keys)
                self._patterns[cat] = re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])")
        exemplars = [
            (c, normalise(e).clean) for c in CATEGORIES for e in policy.categories[c].exemplars
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
