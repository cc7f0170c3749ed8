"""Content cases: prompts legal expects the draft's content policy to allow or block.

A case (``content_cases`` in ``tests/*_test.yaml``) names a prompt, the expected outcome
(``allowed`` or ``blocked``), the categories that must be among those that block it, and
optionally categories that must not. Cases run through the real prompt classifier built for
the draft (its term lists and exemplars) and the draft's thresholds and actions, exactly as
a generation request's prompt is judged.
"""

from __future__ import annotations

from gateway.domain import Direction
from gateway.policy.bundle import PolicyBundle
from gateway.policy.content import judge_text
from gateway.policy.policy_tests import CaseResult, Located, load_test_files
from gateway.policy.schema import ContentTestCase
from gateway.safety.prompt_classifier import PromptClassifier


def run_content_tests(bundle: PolicyBundle, classifier: PromptClassifier) -> list[CaseResult]:
    """Every content case of ``bundle``, classified in one batch by ``classifier``."""
    cases = load_test_files(bundle)[1]
    if not cases:
        return []
    scores = classifier.classify([c.case.prompt for c in cases])
    if len(scores) != len(cases):
        raise RuntimeError("the prompt classifier returned the wrong number of results")
    results: list[CaseResult] = []
    for located, score in zip(cases, scores, strict=True):
        assessment = judge_text(bundle.content, score, Direction.PROMPT)
        blocked = list(assessment.details.get("blocked_categories", []))
        results.append(_result(located, blocked))
    return results


def _result(located: Located[ContentTestCase], blocked: list[str]) -> CaseResult:
    case = located.case
    outcome = "blocked" if blocked else "allowed"
    failures: list[str] = []
    if outcome != case.expect:
        why = f" (by {', '.join(blocked)})" if blocked else ""
        failures.append(f"the prompt is {outcome}{why}, expected {case.expect}")
    elif blocked:
        failures += [
            f"not blocked for {c} (blocked for {', '.join(blocked)})"
            for c in case.categories
            if c not in blocked
        ]
        failures += [
            f"blocked for {c}, which must not block it" for c in case.not_categories if c in blocked
        ]
    decision = f"blocked ({', '.join(blocked)})" if blocked else "allowed"
    return CaseResult(
        located.file,
        case.name or case.prompt,
        not failures,
        failures,
        decision,
        "content",
        located.line,
    )
