"""`gateway moderate`: moderate a CSV column into JSON Lines, streaming in input order."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from gateway.pipeline.moderation import moderate_texts
from gateway.policy.schema import ContentPolicy
from gateway.safety.prompt_classifier import PromptClassifier

CHUNK = 256


def iter_column(handle: TextIO, column: str) -> Iterator[str]:
    reader = csv.DictReader(handle)
    if reader.fieldnames is None or column not in reader.fieldnames:
        found = ", ".join(reader.fieldnames or []) or "no header"
        raise KeyError(f"column {column!r} not found (columns: {found})")
    for row in reader:
        yield row[column] or ""


def moderate_csv(
    source: Path,
    column: str,
    out: TextIO,
    classifier: PromptClassifier,
    policy: ContentPolicy,
    progress: Callable[[int], Any] | None = None,
) -> int:
    """Write one ``results[i]`` object per row; at most ``CHUNK`` rows are held at once."""
    count = 0
    with source.open(newline="", encoding="utf-8") as handle:
        chunk: list[str] = []
        for text in iter_column(handle, column):
            chunk.append(text)
            if len(chunk) == CHUNK:
                count += _flush(chunk, out, classifier, policy, progress)
                chunk = []
        if chunk:
            count += _flush(chunk, out, classifier, policy, progress)
    return count


def _flush(
    chunk: list[str],
    out: TextIO,
    classifier: PromptClassifier,
    policy: ContentPolicy,
    progress: Callable[[int], Any] | None,
) -> int:
    for result in moderate_texts(classifier, policy, chunk):
        out.write(json.dumps(result, sort_keys=True) + "\n")
    if progress is not None:
        progress(len(chunk))
    return len(chunk)
