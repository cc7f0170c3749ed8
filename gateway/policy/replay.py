"""Replay: what would past decisions have been under a draft policy?

No model runs again. For each recorded decision the replay takes what was recorded — the
prompt classifier's scores, the image classifiers' scores, the model, the intended use and
the tenant facts — and applies the draft's rules to them:
1. licence: the draft's models, licences and uses, evaluated for the recorded model, use
   and facts;
2. prompt and negative prompt: the draft's thresholds and actions on the recorded scores,
   plus the draft's term lists matched on the recorded normalised prompt (a term the draft
   adds scores 1.0; a term it removes cannot lower a recorded score, since the classifier's
   own score under it was not recorded separately);
3. images: the draft's image thresholds and actions on the recorded scores; a CLIP concept
   that fired stays fired (its thresholds need the image, which is not kept).
Decisions that ended for operational reasons (model unavailable, queue full, a failed stage,
a crash) keep their outcome unless the draft would refuse them earlier.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.models import Decision, PolicyVersion
from gateway.domain import CATEGORIES, Direction, ImageScores, Severity, TextScores
from gateway.policy.bundle import PolicyBundle, parse_bundle
from gateway.policy.content import judge_image, judge_text, severity_for
from gateway.policy.evaluate import evaluate_model
from gateway.policy.schema import ContentPolicy
from gateway.policy.store import decode_files
from gateway.safety.normalize import normalise
from gateway.safety.prompt_classifier import term_patterns

MAX_LIMIT = 1_000_000
MAX_LISTED = 1000
POLICY_OUTCOMES = ("licence_denied", "prompt_blocked", "model_not_registered")


@dataclass(frozen=True)
class Recorded:
    id: str
    tenant_id: str
    outcome: str
    model_id: str
    intended_use: str | None
    policy_version: str
    record: dict[str, Any]


class Replayer:
    """Applies one draft bundle to recorded decisions; caches what repeats across them."""

    def __init__(self, session: Session, draft: PolicyBundle) -> None:
        self._session = session
        self._draft = draft
        self._patterns = term_patterns(draft.content)
        self._licence_cache: dict[str, tuple[bool, list[str]]] = {}
        self._old_content: dict[str, ContentPolicy | None] = {}

    def outcome(self, d: Recorded) -> tuple[str, list[str]]:
        """The outcome under the draft and the reasons it differs (if it does)."""
        rec = d.record
        use = d.intended_use or self._draft.uses.default
        if d.model_id not in self._draft.models.models:
            return "model_not_registered", [f"model {d.model_id!r} is not in the draft's registry"]
        allowed, why = self._licence(d.model_id, use, _facts(rec))
        if not allowed:
            return "licence_denied", [f"licence: {w}" for w in why]
        blocked = self._prompt_blocks(rec)
        if blocked:
            return "prompt_blocked", blocked
        images = rec.get("images")
        if images:
            return self._images(d, images)
        if d.outcome in POLICY_OUTCOMES:
            return "would_generate", ["the draft lets the request through to generation"]
        return d.outcome, []

    def _licence(self, model: str, use: str, facts: dict[str, Any]) -> tuple[bool, list[str]]:
        key = json.dumps([model, use, facts], sort_keys=True, default=str)
        cached = self._licence_cache.get(key)
        if cached is None:
            verdict = evaluate_model(self._draft, model, use, facts)
            cached = (verdict.allowed, [f"{r.code}: {r.message}" for r in verdict.reasons])
            self._licence_cache[key] = cached
        return cached

    def _prompt_blocks(self, rec: dict[str, Any]) -> list[str]:
        reasons: list[str] = []
        for field, direction in (
            ("prompt", Direction.PROMPT),
            ("negative_prompt", Direction.NEGATIVE_PROMPT),
        ):
            part = rec.get(field)
            if not part or "assessment" not in part:
                continue
            scores = dict(part["assessment"].get("category_scores", {}))
            matched: dict[str, list[str]] = {}
            text = part.get("normalised")
            if text:
                key = normalise(text).key
                for cat, pattern in self._patterns.items():
                    hits = sorted(set(pattern.findall(key)))
                    if hits:
                        matched[cat] = hits
                        scores[cat] = 1.0
            judged = judge_text(
                self._draft.content, TextScores(text or "", text or "", scores, matched), direction
            )
            for cat in judged.details.get("blocked_categories", []):
                level = judged.severities[cat].value
                terms = f" (terms: {', '.join(matched[cat])})" if cat in matched else ""
                reasons.append(f"{field}: {cat} at {level} severity is blocked{terms}")
        return reasons

    def _images(self, d: Recorded, images: list[dict[str, Any]]) -> tuple[str, list[str]]:
        old = self._old(d.policy_version)
        reasons: list[str] = []
        allowed = 0
        for img in images:
            a = img.get("assessment") or {}
            scores = {c: float(v) for c, v in a.get("category_scores", {}).items()}
            fired: dict[str, list[str]] = {}
            for cat, sev in a.get("category_severities", {}).items():
                if sev == Severity.HIGH.value and cat in CATEGORIES and old is not None:
                    by_score = severity_for(
                        scores.get(cat, 0.0), old.categories[cat].thresholds.image
                    )
                    if by_score is not Severity.HIGH:
                        fired[cat] = ["(recorded concept match)"]
            judged = judge_image(self._draft.content, ImageScores(scores, {}, fired))
            if judged.action == "allow":
                allowed += 1
            if judged.action != img.get("action"):
                cats = judged.details.get("blocked_categories", []) + judged.details.get(
                    "quarantined_categories", []
                )
                reasons.append(
                    f"image {img.get('index')}: {img.get('action')} -> {judged.action}"
                    + (f" ({', '.join(cats)})" if cats else "")
                )
        outcome = (
            "allowed"
            if allowed == len(images)
            else "output_filtered"
            if allowed == 0
            else "partially_filtered"
        )
        return outcome, reasons

    def _old(self, sha: str) -> ContentPolicy | None:
        """The content policy a decision was made under (for telling concept hits apart)."""
        if sha not in self._old_content:
            row = self._session.scalars(
                select(PolicyVersion).where(PolicyVersion.sha256 == sha).limit(1)
            ).first()
            self._old_content[sha] = (
                parse_bundle(decode_files(row.files)).content if row is not None else None
            )
        return self._old_content[sha]


def _facts(rec: dict[str, Any]) -> dict[str, Any]:
    facts = rec.get("tenant_facts")
    if facts is None:
        facts = (rec.get("licence") or {}).get("facts_used") or {}
    return dict(facts)


def recorded_decisions(session: Session, limit: int, since: datetime | None) -> Iterator[Recorded]:
    """The last ``limit`` closed decisions (newest first), streamed."""
    query = (
        select(
            Decision.id,
            Decision.tenant_id,
            Decision.outcome,
            Decision.model_id,
            Decision.intended_use,
            Decision.policy_version,
            Decision.record,
        )
        .where(Decision.status == "closed")
        .order_by(Decision.created_at.desc(), Decision.id.desc())
        .limit(limit)
    )
    if since is not None:
        query = query.where(Decision.created_at >= since)
    for row in session.execute(query.execution_options(yield_per=2000)):
        yield Recorded(
            id=row.id,
            tenant_id=row.tenant_id,
            outcome=row.outcome or "aborted",
            model_id=row.model_id,
            intended_use=row.intended_use,
            policy_version=row.policy_version,
            record=row.record or {},
        )


def replay_decisions(
    session: Session,
    draft: PolicyBundle,
    *,
    limit: int,
    since: datetime | None = None,
    list_tenant: str | None = None,
) -> dict[str, Any]:
    """Replay the last ``limit`` decisions of every tenant (policy is global); the counts
    cover them all, but only decisions of ``list_tenant`` are listed (None: every tenant's),
    so a tenant's legal editor never sees another tenant's decisions or matched terms."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    replayer = Replayer(session, draft)
    evaluated = changed = 0
    changes: list[dict[str, Any]] = []
    by_transition: dict[str, int] = {}
    for d in recorded_decisions(session, limit, since):
        evaluated += 1
        after, reasons = replayer.outcome(d)
        if after == d.outcome:
            continue
        changed += 1
        transition = f"{d.outcome} -> {after}"
        by_transition[transition] = by_transition.get(transition, 0) + 1
        if len(changes) < MAX_LISTED and list_tenant in (None, d.tenant_id):
            changes.append(
                {"decision_id": d.id, "before": d.outcome, "after": after, "reasons": reasons}
            )
    return {
        "evaluated": evaluated,
        "changed": changed,
        "by_transition": by_transition,
        "changes": changes,
        "changes_listed": len(changes),
        "changes_scope": "all tenants" if list_tenant is None else "your tenant",
        "draft_sha256": draft.version,
    }
