"""Licence evaluation: statuses, conditions on tenant facts, and the reasons given."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.policy.bundle import load_bundle
from gateway.policy.licence import evaluate_licence
from gateway.policy.schema import Licence
from tests.conftest import REPO

CAPPED: dict[str, Any] = {
    "schema_version": 1,
    "id": "capped",
    "name": "Capped",
    "spdx": "LicenseRef-Capped",
    "conditions": {
        "under_cap": {"fact": "annual_revenue_usd", "op": "<=", "value": 1000000, "clause": "§3"},
        "registered": {"fact": "registered", "op": "true", "clause": "§3"},
        "enterprise": {"fact": "enterprise_agreement", "op": "present"},
    },
    "use_purposes": {
        "research": {"status": "allowed", "clause": "§2"},
        "commercial": {
            "status": "conditional",
            "clause": "§3",
            "any_of": [["registered", "under_cap"], ["enterprise"]],
        },
        "hosted_service": {"status": "unknown"},
        "train_other_model": {"status": "denied", "clause": "§4"},
    },
    "output_rights": {
        "ownership": "licensee",
        "commercial_use": "conditional",
        "attribution": "Powered by X",
        "may_train_other_models": False,
        "derivatives_inherit_restrictions": True,
    },
}


@pytest.fixture
def capped() -> Licence:
    return Licence.model_validate(CAPPED)


@pytest.mark.parametrize(
    ("facts", "decision"),
    [
        ({"annual_revenue_usd": 999_999, "registered": True}, "allow"),
        ({"annual_revenue_usd": 1_000_000, "registered": True}, "allow"),  # "more than" $1M
        ({"annual_revenue_usd": 1_000_001, "registered": True}, "deny"),
        ({"annual_revenue_usd": 10, "registered": False}, "deny"),
        ({"annual_revenue_usd": 50_000_000, "enterprise_agreement": "EA-1"}, "allow"),
    ],
)
def test_conditional_use(capped: Licence, facts: dict[str, Any], decision: str) -> None:
    assert evaluate_licence(capped, "commercial", facts).decision == decision


def test_missing_fact_is_not_satisfied_and_named(capped: Licence) -> None:
    result = evaluate_licence(capped, "commercial", {"registered": True})
    assert result.decision == "deny"
    assert any("annual_revenue_usd" in r.message and r.clause == "§3" for r in result.reasons)


def test_unknown_and_unlisted_uses_deny(capped: Licence) -> None:
    assert evaluate_licence(capped, "hosted_service", {}).decision == "deny"
    assert evaluate_licence(capped, "internal_business", {}).reasons[0].code == "use_not_covered"
    denied = evaluate_licence(capped, "train_other_model", {})
    assert denied.decision == "deny" and denied.reasons[0].clause == "§4"


def test_rights_come_from_the_licence(capped: Licence) -> None:
    rights = evaluate_licence(capped, "research", {}).rights
    assert rights["attribution"] == "Powered by X"
    assert rights["may_train_other_models"] is False
    assert rights["licence"]["id"] == "capped"


def test_seed_licences() -> None:
    bundle = load_bundle(REPO / "policies")
    nc = bundle.licences["stability-nc-research-2023-11-28"]
    assert evaluate_licence(nc, "research", {}).decision == "allow"
    for use in ("commercial", "hosted_service", "internal_business", "train_other_model"):
        assert evaluate_licence(nc, use, {}).decision == "deny"
    apache = bundle.licences["apache-2.0"]
    assert all(evaluate_licence(apache, u, {}).decision == "allow" for u in apache.use_purposes)


def test_condition_naming_unknown_condition_is_invalid() -> None:
    bad = {**CAPPED, "use_purposes": {"research": {"status": "conditional", "any_of": [["nope"]]}}}
    with pytest.raises(ValueError, match="unknown condition 'nope'"):
        Licence.model_validate(bad)
