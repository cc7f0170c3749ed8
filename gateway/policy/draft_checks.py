"""What a draft must pass before it leaves the draft state: validation, licence cases and
content cases; and the diff between two versions.

The content cases need a prompt classifier built for the draft itself (its term lists and
exemplars), which the caller supplies (``Runtime.draft_classifier``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from gateway.errors import GatewayError
from gateway.policy.bundle import PolicyBundle, PolicyError, parse_bundle
from gateway.policy.content_tests import run_content_tests
from gateway.policy.policy_tests import CaseResult, run_policy_tests
from gateway.safety.artefacts import ArtefactUnavailable
from gateway.safety.prompt_classifier import PromptClassifier

ClassifierFor = Callable[[PolicyBundle], PromptClassifier]


def validation_json(files: Mapping[str, str]) -> dict[str, Any]:
    try:
        parse_bundle(files)
    except PolicyError as exc:
        return {"valid": False, "errors": [i.to_json() for i in exc.issues]}
    return {"valid": True, "errors": []}


def run_all(bundle: PolicyBundle, classifier_for: ClassifierFor) -> list[CaseResult]:
    """Licence cases, then content cases (raises ``PolicyError`` for a file that does not
    parse, ``ArtefactUnavailable`` when the prompt classifier cannot run)."""
    results = run_policy_tests(bundle)
    return results + run_content_tests(bundle, classifier_for(bundle))


def tests_json(files: Mapping[str, str], classifier_for: ClassifierFor) -> dict[str, Any]:
    try:
        results = run_all(parse_bundle(files), classifier_for)
    except PolicyError as exc:
        return {
            "passed": False,
            "total": 0,
            "failed": 0,
            "errors": [i.to_json() for i in exc.issues],
            "cases": [],
        }
    except ArtefactUnavailable as exc:
        return {
            "passed": False,
            "total": 0,
            "failed": 0,
            "errors": [
                {
                    "file": "",
                    "line": None,
                    "path": "",
                    "message": f"the content cases "
                    f"cannot run: the prompt classifier is unavailable ({exc})",
                }
            ],
            "cases": [],
        }
    failed = sum(not r.passed for r in results)
    return {
        "passed": failed == 0,
        "total": len(results),
        "failed": failed,
        "licence_cases": sum(r.kind == "licence" for r in results),
        "content_cases": sum(r.kind == "content" for r in results),
        "errors": [],
        "cases": [r.to_json() for r in results],
    }


def ready(files: Mapping[str, str], classifier_for: ClassifierFor) -> PolicyBundle:
    """A bundle may leave the draft state only when it validates and all its tests pass."""
    try:
        bundle = parse_bundle(files)
        failed = [r for r in run_all(bundle, classifier_for) if not r.passed]
    except PolicyError as exc:
        raise GatewayError(
            422,
            "policy_invalid",
            "the draft does not validate: " + "; ".join(str(i) for i in exc.issues[:5]),
            extra={"errors": [i.to_json() for i in exc.issues]},
        ) from None
    except ArtefactUnavailable as exc:  # fail closed: untested content rules do not go out
        raise GatewayError(
            503,
            "classifier_unavailable",
            f"the draft's content cases cannot run: {exc}",
        ) from None
    if failed:
        first = "; ".join(f"{r.name}: {r.failures[0]}" for r in failed[:3] if r.failures)
        raise GatewayError(
            422,
            "policy_tests_failed",
            f"{len(failed)} of the draft's policy tests fail ({first})",
            extra={"failures": [r.to_json() for r in failed]},
        )
    return bundle


def diff_files(a: Mapping[str, str], b: Mapping[str, str]) -> list[dict[str, Any]]:
    """Per changed file, a unified diff with one line per line (no doubled newlines)."""
    out: list[dict[str, Any]] = []
    for name in sorted(set(a) | set(b)):
        before, after = a.get(name), b.get(name)
        if before == after:
            continue
        change = "added" if before is None else "removed" if after is None else "modified"
        lines = difflib.unified_diff(
            (before or "").splitlines(),
            (after or "").splitlines(),
            fromfile=f"a/{name}",
            tofile=f"b/{name}",
            lineterm="",
        )
        out.append({"path": name, "change": change, "diff": "\n".join(lines) + "\n"})
    return out
