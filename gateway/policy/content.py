"""Content rules: turn classifier scores into severities and an action, per policy.

Thresholds are per category and per direction (prompt, image). Negative prompts use the
prompt thresholds but their own ``block_at`` (naming what to avoid is not a violation).
"""

from __future__ import annotations

from gateway.domain import (
    CATEGORIES,
    Action,
    Assessment,
    Direction,
    ImageScores,
    Severity,
    TextScores,
)
from gateway.policy.schema import ActionLevel, ContentPolicy, Thresholds

_LEVELS: dict[str, int] = {"low": 1, "medium": 2, "high": 3}


def severity_for(score: float, thresholds: Thresholds) -> Severity:
    if score >= thresholds.high:
        return Severity.HIGH
    if score >= thresholds.medium:
        return Severity.MEDIUM
    if score >= thresholds.low:
        return Severity.LOW
    return Severity.SAFE


def reaches(severity: Severity, level: ActionLevel) -> bool:
    return level != "never" and severity.rank >= _LEVELS[level]


def judge_text(policy: ContentPolicy, scores: TextScores, direction: Direction) -> Assessment:
    severities: dict[str, Severity] = {}
    blocked: list[str] = []
    rules: list[str] = []
    for cat in CATEGORIES:
        cp = policy.categories[cat]
        sev = severity_for(scores.scores.get(cat, 0.0), cp.thresholds.prompt)
        severities[cat] = sev
        actions = cp.actions.prompt if direction is Direction.PROMPT else cp.actions.negative_prompt
        if reaches(sev, actions.block_at):
            blocked.append(cat)
            rules.append(f"content.{cat}.{direction.value}.block_at={actions.block_at}")
        rules.extend(f"content.{cat}.terms:{t}" for t in scores.matched_terms.get(cat, []))
    flagged = [c for c in CATEGORIES if severities[c] is not Severity.SAFE]
    return Assessment(
        direction=direction,
        scores={c: scores.scores.get(c, 0.0) for c in CATEGORIES},
        severities=severities,
        flagged=flagged,
        action="block" if blocked else "allow",
        matched_rules=rules,
        details={"blocked_categories": blocked} if blocked else {},
    )


def judge_image(policy: ContentPolicy, scores: ImageScores) -> Assessment:
    severities: dict[str, Severity] = {}
    blocked: list[str] = []
    quarantined: list[str] = []
    rules: list[str] = []
    for cat in CATEGORIES:
        cp = policy.categories[cat]
        sev = severity_for(scores.scores.get(cat, 0.0), cp.thresholds.image)
        if scores.fired.get(cat):
            sev = Severity.HIGH
            rules.extend(f"image.concepts:{text}" for text in scores.fired[cat])
        severities[cat] = sev
        if reaches(sev, cp.actions.image.block_at):
            blocked.append(cat)
            rules.append(f"content.{cat}.image.block_at={cp.actions.image.block_at}")
        elif reaches(sev, cp.actions.image.quarantine_at):
            quarantined.append(cat)
            rules.append(f"content.{cat}.image.quarantine_at={cp.actions.image.quarantine_at}")
    action: Action = "block" if blocked else "quarantine" if quarantined else "allow"
    details: dict[str, object] = {"detectors": scores.detectors}
    if blocked or quarantined:
        details["blocked_categories"] = blocked
        details["quarantined_categories"] = quarantined
    return Assessment(
        direction=Direction.IMAGE,
        scores={c: scores.scores.get(c, 0.0) for c in CATEGORIES},
        severities=severities,
        flagged=[c for c in CATEGORIES if severities[c] is not Severity.SAFE],
        action=action,
        matched_rules=rules,
        details=details,
    )
