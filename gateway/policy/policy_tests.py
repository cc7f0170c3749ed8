"""Policy tests legal can write: ``policies/tests/*_test.yaml`` cases run against the bundle.

Each case names a model, an intended use and tenant facts, and what must come out: the
decision, reason codes, cited clauses and rights fields. A bundle whose tests fail cannot be
activated (the gateway refuses to start with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from gateway.policy.bundle import PolicyBundle, PolicyError, PolicyIssue, _line
from gateway.policy.evaluate import evaluate_model
from gateway.policy.schema import PolicyTestCase, PolicyTests


@dataclass(frozen=True)
class CaseResult:
    file: str
    name: str
    passed: bool
    failures: list[str]
    decision: str

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "name": self.name,
            "passed": self.passed,
            "decision": self.decision,
            "failures": self.failures,
        }


def load_cases(bundle: PolicyBundle) -> list[tuple[str, PolicyTestCase]]:
    cases: list[tuple[str, PolicyTestCase]] = []
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
        for i, case in enumerate(parsed.cases):
            if case.model not in bundle.models.models:
                issues.append(
                    PolicyIssue(
                        name,
                        _line(text, ("cases", i, "model")),
                        f"cases.{i}.model",
                        f"unknown model {case.model!r}",
                    )
                )
            else:
                cases.append((name, case))
    if issues:
        raise PolicyError(issues)
    return cases


def run_case(bundle: PolicyBundle, file: str, case: PolicyTestCase) -> CaseResult:
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
    return CaseResult(file, case.name, not failures, failures, verdict.decision)


def run_policy_tests(bundle: PolicyBundle) -> list[CaseResult]:
    return [run_case(bundle, file, case) for file, case in load_cases(bundle)]


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return "<missing>"
        value = value[part]
    return value
