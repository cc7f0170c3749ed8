"""A validated generation request, independent of HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.audit.decisions import Outcome
from gateway.domain import Action


@dataclass(frozen=True)
class GenerationRequest:
    model: str
    prompt: str
    n: int = 1
    size: str | None = None
    response_format: str = "b64_json"
    user: str | None = None
    negative_prompt: str | None = None
    seed: int | None = None
    steps: int | None = None
    intended_use: str | None = None
    output_format: str = "png"  # png | jpeg | webp

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "n": self.n,
            "size": self.size,
            "response_format": self.response_format,
            "user": self.user,
            "seed": self.seed,
            "steps": self.steps,
            "intended_use": self.intended_use,
            "output_format": self.output_format,
        }


@dataclass(frozen=True)
class DeliveredImage:
    index: int
    action: Action
    png: bytes | None  # the delivered file (PNG, JPEG or WebP: see mime); None if withheld
    sha256: str
    assessment: dict[str, Any]
    categories: list[str]
    mime: str = "image/png"


@dataclass(frozen=True)
class GenerationResult:
    decision_id: str
    outcome: Outcome  # allowed | partially_filtered (every other outcome is an error)
    images: list[DeliveredImage]
    governance: dict[str, Any]
