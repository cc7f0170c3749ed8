"""Domain types shared by every stage of a request.

Nothing here imports FastAPI, SQLAlchemy or torch: these are the words the stages
speak to each other (assessments, severities, principals, rights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

CATEGORIES: tuple[str, ...] = (
    "sexual",
    "sexual/minors",
    "violence",
    "self-harm",
    "hate",
    "harassment",
    "illicit",
    "shocking",
)

INTENDED_USES: tuple[str, ...] = (
    "research",
    "internal_business",
    "commercial",
    "hosted_service",
    "train_other_model",
)


class Role(str, Enum):
    REQUESTER = "requester"
    LEGAL_EDITOR = "legal_editor"
    LEGAL_APPROVER = "legal_approver"
    AUDITOR = "auditor"
    ADMIN = "admin"
    MODEL_MANAGER = "model_manager"  # fine-tunes models (the result still needs legal approval)


class Severity(str, Enum):
    SAFE = "safe"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.SAFE: 0, Severity.LOW: 1, Severity.MEDIUM: 2, Severity.HIGH: 3}


class Direction(str, Enum):
    PROMPT = "prompt"
    NEGATIVE_PROMPT = "negative_prompt"
    IMAGE = "image"


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from the API key."""

    key_id: str
    tenant_id: str
    tenant_name: str
    roles: frozenset[Role]
    default_intended_use: str | None = None
    allowed_uses: tuple[str, ...] | None = None
    tenant_facts: dict[str, Any] = field(default_factory=dict)

    def has(self, role: Role) -> bool:
        return role in self.roles or Role.ADMIN in self.roles


@dataclass(frozen=True)
class TextScores:
    """Raw output of the prompt classifier for one text (before policy)."""

    text: str
    normalised: str
    scores: dict[str, float]
    matched_terms: dict[str, list[str]]


@dataclass(frozen=True)
class ImageScores:
    """Raw output of the image classifiers for one image (before policy)."""

    scores: dict[str, float]
    detectors: dict[str, dict[str, Any]]
    fired: dict[str, list[str]] = field(default_factory=dict)


Action = Literal["allow", "block", "quarantine"]
"""What the content policy does with a text or an image."""


@dataclass(frozen=True)
class Assessment:
    """Scores judged by policy: severity per category and what to do."""

    direction: Direction
    scores: dict[str, float]
    severities: dict[str, Severity]
    flagged: list[str]
    action: Action
    matched_rules: list[str]
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction.value,
            "action": self.action,
            "flagged": list(self.flagged),
            "category_scores": {k: round(v, 4) for k, v in self.scores.items()},
            "category_severities": {k: v.value for k, v in self.severities.items()},
            "matched_rules": list(self.matched_rules),
            **({"details": self.details} if self.details else {}),
        }


@dataclass(frozen=True)
class LicenceReason:
    code: str
    message: str
    licence: str
    clause: str | None
    legal_flag: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "licence": self.licence,
            "clause": self.clause,
        }
        if self.legal_flag:
            out["legal_flag"] = self.legal_flag
        return out


@dataclass(frozen=True)
class LicenceDecision:
    decision: str  # "allow" | "deny"
    licence: str
    intended_use: str
    reasons: list[LicenceReason]
    rights: dict[str, Any]
    facts_used: dict[str, Any]
    obligations: list[dict[str, Any]] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "licence": self.licence,
            "intended_use": self.intended_use,
            "reasons": [r.to_json() for r in self.reasons],
            "rights": self.rights,
            "obligations": self.obligations,
            "facts_used": self.facts_used,
            "model_chain": self.chain,
        }

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"
