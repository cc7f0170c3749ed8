"""Scoring a generated batch with the image classifier, off the model's owner thread.

:meth:`Batcher._run` hands each finished batch here (on its scoring thread): every scorer (the
image classifier of a request's policy version) scores all of its images of the batch in one
call, and each job's :class:`Scored` future is completed with its own slice. A scorer that
raises or returns the wrong number of results completes them with ``error`` set, and the
request fails closed on it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from gateway.domain import ImageScores


class ImageScorer(Protocol):
    def classify(self, images: Sequence[Image.Image]) -> list[ImageScores]: ...


@dataclass(frozen=True)
class Scored:
    scores: list[ImageScores] | None  # None: no scorer, or it failed (``error``)
    error: str | None = None
    classifier_ms: float = 0.0


def score_batch(
    scorers: Sequence[ImageScorer | None],
    outputs: Sequence[list[Image.Image]],
    scored: Sequence[Future[Scored]],
) -> None:
    """Job ``i`` of the batch: its scorer, its images, its future."""
    groups: dict[int, list[int]] = {}
    for i, scorer in enumerate(scorers):
        if scorer is not None:
            groups.setdefault(id(scorer), []).append(i)
        else:
            scored[i].set_result(Scored(None))
    for members in groups.values():
        scorer = scorers[members[0]]
        assert scorer is not None
        images = [im for i in members for im in outputs[i]]
        t0 = time.monotonic()
        try:
            scores: list[ImageScores] | None = scorer.classify(images)
            error = None
            if scores is None or len(scores) != len(images):
                scores, error = None, "returned the wrong number of results"
        except Exception as exc:  # the request fails closed on it
            scores, error = None, f"{type(exc).__name__}: {exc}"
        ms = round((time.monotonic() - t0) * 1000, 2)
        offset = 0
        for i in members:
            n = len(outputs[i])
            part = scores[offset : offset + n] if scores is not None else None
            scored[i].set_result(Scored(part, error, ms))
            offset += n
