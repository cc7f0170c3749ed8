"""Policy tests legal can write: ``policies/tests/*_test.yaml`` cases run against the bundle.

Licence cases (``cases``) name a model, an intended use and tenant facts, and what must come
out: the decision, reason codes, cited clauses and rights fields. A bundle whose licence cases
fail cannot be activated (the gateway refuses to start with it). Content cases
(``content_cases``, a prompt and its expected outcome) need the prompt classifier and run in
``content_tests.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

import yaml
from pydantic import ValidationError

from gateway.policy.bundle import (
    PolicyBundle,
    PolicyError,
    PolicyIssue,
    _line,
    compose_yaml,
    node_line,
)
from gateway.policy.evaluate import evaluate_model
from gateway.policy.schema import ContentTestCase, PolicyTestCase, PolicyTests

C = TypeVar("C", PolicyTestCase, ContentTestCase)


CaseKind = Literal["licence", "content"]


@dataclass(frozen=True)
class CaseResult:
    file: str
    name: str
    passed: bool
    failures: list[str]
    decision: str
    kind: CaseKind = "licence"
    line: int | None = None  # where the case starts in its file

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "name": self.name,
            "kind": self.kind,
            "line": self.line,
            "passed": self.passed,
            "decision": self.decision,
            "failures": self.failures,
        }


@dataclass(frozen=True)
class Located(Generic[C]):
    """A test case with the file and line it came from."""

    file: str
    line: int | None
    case: C


def load_cases(bundle: PolicyBundle) -> list[tuple[str, PolicyTestCase]]:
    """The licence cases of every test file (raises ``PolicyError`` if one does not parse)."""
    return [(c.file, c.case) for c in load_test_files(bundle)[0]]


def load_test_files(
    bundle: PolicyBundle,
) -> tuple[list[Located[PolicyTestCase]], list[Located[ContentTestCase]]]:
    """Licence cases and content cases of every ``tests/*_test.yaml``."""
    cases: list[Located[PolicyTestCase]] = []
    content: list[Located[ContentTestCase]] = []
    issues: list[PolicyIssue] = []
    for name in sorted(
        n for n in bundle.files if n.startswith("tests/") and n.endswith("_test.yaml")
    ):
        text = bundle.files[name]
        try:
            parsed = PolicyTests.model_validate(yaml.safe_load(text))
        except yaml.YAMLError as exc:
            issues.append(PolicyIssue(name, None, "", f"not valid YAML: {exc}"))
            continue
        except ValidationError as exc:
            for err in exc.errors():
                loc = tuple(err["loc"])
                issues.append(
                    PolicyIssue(
                        name,
                        _line(text, loc),
                        ".".join(map(str, loc)),
                        err["msg"].removeprefix("Value error, "),
                    )
                )
            continue
        tree = compose_yaml(text)  # once per file: every case's line comes from it
        for i, case in enumerate(parsed.cases):
            if case.model not in bundle.models.models:
                issues.append(
                    PolicyIssue(
                        name,
                        node_line(tree, ("cases", i, "model")),
                        f"cases.{i}.model",
                        f"unknown model {case.model!r}",
                    )
                )
            else:
                cases.append(Located(name, node_line(tree, ("cases", i)), case))
        content += [
            Located(name, node_line(tree, ("content_cases", i)), case)
            for i, case in enumerate(parsed.content_cases)
        ]
    if issues:
        raise PolicyError(issues)
    return cases, content


def run_case(
    bundle: PolicyBundle, file: str, case: PolicyTestCase, line: int | None = None
) -> CaseResult:
    verdict = evaluate_model(bundle, case.model, case.intended_use, case.facts)
    failures: list[str] = []
    exp = case.expect
    if verdict.decision != exp.decision:
        failures.append(f"decision is {verdict.decision}, expected {exp.decision}")
    codes = {r.code for r in verdict.reasons}
    failures += [
        f"reason {c!r} missing (got {sorted(codes)})" for c in exp.reasons if c not in codes
    ]
    clauses = {r.clause for r in verdict.reasons if r.clause}
    failures += [
        f"clause {c!r} not cited (got {sorted(clauses)})" for c in exp.clauses if c not in clauses
    ]
    for key, want in exp.rights.items():
        got = _lookup(verdict.rights, key)
        if got != want:
            failures.append(f"rights.{key} is {got!r}, expected {want!r}")
    return CaseResult(file, case.name, not failures, failures, verdict.decision, "licence", line)


def run_policy_tests(bundle: PolicyBundle) -> list[CaseResult]:
    """The licence cases (no classifier needed: start-up and every refresh run these)."""
    return [run_case(bundle, c.file, c.case, c.line) for c in load_test_files(bundle)[0]]


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return "<missing>"
        value = value[part]
    return value
