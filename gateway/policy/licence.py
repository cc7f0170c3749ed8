"""Licence check: a model's licence × the intended use × the tenant's facts.

``unknown`` means deny; a fact a condition needs but the tenant lacks counts as not
satisfied, and the reason names the fact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.domain import LicenceDecision, LicenceReason
from gateway.policy.schema import Condition, Licence


def evaluate_licence(
    licence: Licence, intended_use: str, facts: Mapping[str, Any], *, with_rights: bool = True
) -> LicenceDecision:
    reasons: list[LicenceReason] = []
    used: dict[str, Any] = {}
    perm = licence.use_purposes.get(intended_use)
    if perm is None or perm.status == "unknown":
        decision = "deny"
        reasons.append(
            LicenceReason(
                "use_not_covered",
                f"licence {licence.name} does not state that {intended_use!r} is permitted; "
                "unknown counts as denied",
                licence.id,
                perm.clause if perm else None,
                perm.legal_flag if perm else None,
            )
        )
    elif perm.status == "denied":
        decision = "deny"
        reasons.append(
            LicenceReason(
                "use_denied",
                f"licence {licence.name} does not permit {intended_use!r}",
                licence.id,
                perm.clause,
                perm.legal_flag,
            )
        )
    elif perm.status == "allowed":
        decision = "allow"
        reasons.append(
            LicenceReason(
                "use_allowed",
                f"licence {licence.name} permits {intended_use!r}",
                licence.id,
                perm.clause,
                perm.legal_flag,
            )
        )
    else:
        decision, group_reasons = _conditional(licence, perm.any_of, facts, used)
        if perm.legal_flag:
            group_reasons = [
                LicenceReason(r.code, r.message, r.licence, r.clause, perm.legal_flag)
                for r in group_reasons
            ]
        reasons.extend(group_reasons)
        if decision == "allow":
            reasons.insert(
                0,
                LicenceReason(
                    "use_allowed_conditions_met",
                    f"licence {licence.name} permits {intended_use!r}; its conditions are met",
                    licence.id,
                    perm.clause,
                    perm.legal_flag,
                ),
            )
    return LicenceDecision(
        decision=decision,
        licence=licence.id,
        intended_use=intended_use,
        reasons=reasons,
        rights=rights_of(licence, facts) if with_rights else {},
        facts_used=used,
    )


def rights_of(licence: Licence, facts: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Output rights for this tenant: a ``commercial_use_follows`` use that the tenant may
    put the model to (e.g. a paid licence, met conditions) makes outputs commercial."""
    r = licence.output_rights
    commercial = "denied" if r.commercial_use == "unknown" else r.commercial_use
    follows = r.commercial_use_follows
    if (
        follows
        and facts is not None
        and follows in licence.use_purposes
        and evaluate_licence(licence, follows, facts, with_rights=False).allowed
    ):
        commercial = "allowed"
    return {
        "commercial_use": commercial,
        "attribution": r.attribution,
        "may_train_other_models": r.may_train_other_models,
        "derivatives_inherit_restrictions": r.derivatives_inherit_restrictions,
        "use_restrictions": [u.model_dump(exclude_none=True) for u in r.use_restrictions],
        "ownership": r.ownership,
        "ai_disclosure": r.ai_disclosure,
        "licence": {"id": licence.id, "spdx": licence.spdx, "clause": r.clause},
        **({"legal_flag": r.legal_flag} if r.legal_flag else {}),
    }


def _conditional(
    licence: Licence,
    any_of: list[list[str]],
    facts: Mapping[str, Any],
    used: dict[str, Any],
) -> tuple[str, list[LicenceReason]]:
    failures: list[LicenceReason] = []
    for group in any_of:
        group_failures = []
        for name in group:
            cond = licence.conditions[name]
            if cond.fact in facts:
                used[cond.fact] = facts[cond.fact]
            ok, why = check_condition(cond, facts)
            if not ok:
                group_failures.append(
                    LicenceReason(f"condition_not_met:{name}", why, licence.id, cond.clause)
                )
        if not group_failures:
            return "allow", []
        failures.extend(group_failures)
    if not any_of:
        failures.append(
            LicenceReason("no_conditions", "conditional use lists no conditions", licence.id, None)
        )
    return "deny", failures


def check_condition(cond: Condition, facts: Mapping[str, Any]) -> tuple[bool, str]:
    if cond.fact not in facts or facts[cond.fact] is None:
        return False, f"tenant fact {cond.fact!r} is not set (required by the condition)"
    value = facts[cond.fact]
    if cond.op == "present":
        return True, ""
    if cond.op == "true":
        ok = value is True or str(value).lower() in {"true", "yes", "1"}
        return ok, "" if ok else f"tenant fact {cond.fact!r} is {value!r}, not true"
    try:
        left, right = float(value), float(cond.value)
        ok = {
            "<": left < right,
            "<=": left <= right,
            ">": left > right,
            ">=": left >= right,
            "==": left == right,
            "!=": left != right,
        }[cond.op]
    except (TypeError, ValueError):
        ok = {"==": value == cond.value, "!=": value != cond.value}.get(cond.op, False)
    why = "" if ok else f"tenant fact {cond.fact!r} = {value!r} fails {cond.op} {cond.value!r}"
    return ok, why
