"""Licence evaluation of a registered model, through its chain of bases.

A fine-tune or LoRA adapter is judged under its own licence *and* every base's: the use is
allowed only if every licence in the chain allows it, so a derivative of a non-commercial
base can never be commercial. Rights merge to the most restrictive reading; use
restrictions and obligations accumulate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.domain import LicenceDecision
from gateway.policy.bundle import PolicyBundle
from gateway.policy.licence import evaluate_licence

_COMMERCIAL_ORDER = {"denied": 0, "unknown": 0, "conditional": 1, "allowed": 2}
_DISCLOSURE_ORDER = {"required": 0, "law_dependent": 1, "not_required": 2}


def evaluate_model(
    bundle: PolicyBundle, model_id: str, intended_use: str, facts: Mapping[str, Any]
) -> LicenceDecision:
    chain = bundle.models.chain(model_id)
    verdicts = []
    for mid in chain:
        entry = bundle.models.models[mid]
        verdicts.append(
            (mid, evaluate_licence(bundle.licences[entry.licence], intended_use, facts))
        )
    own = verdicts[0][1]
    decision = "allow" if all(v.allowed for _, v in verdicts) else "deny"
    reasons = list(dict.fromkeys(r for _, v in verdicts for r in v.reasons))
    if decision == "deny":  # lead with what refused it
        reasons.sort(key=lambda r: r.code.startswith("use_allowed"))
    facts_used: dict[str, Any] = {}
    for _, v in verdicts:
        facts_used.update(v.facts_used)
    obligations = [
        {
            **o.model_dump(exclude_none=True),
            "licence": bundle.licences[bundle.models.models[m].licence].id,
        }
        for m in chain
        for o in bundle.licences[bundle.models.models[m].licence].obligations
        if o.when in ("always", intended_use)
    ]
    return LicenceDecision(
        decision=decision,
        licence=own.licence,
        intended_use=intended_use,
        reasons=reasons,
        rights=_merge_rights(bundle, chain, [v.rights for _, v in verdicts]),
        facts_used=facts_used,
        obligations=obligations,
        chain=chain,
    )


def _merge_rights(
    bundle: PolicyBundle, chain: list[str], rights: list[dict[str, Any]]
) -> dict[str, Any]:
    own = dict(rights[0])
    if len(rights) == 1:
        own["licence"] = {**own["licence"], "chain": [own["licence"]["id"]]}
        own["use_restrictions"] = own["use_restrictions"] + _model_restrictions(bundle, chain)
        return own
    merged = dict(own)
    merged["commercial_use"] = min(
        (r["commercial_use"] for r in rights), key=lambda s: _COMMERCIAL_ORDER[s]
    )
    attributions = [r["attribution"] for r in rights if r["attribution"]]
    merged["attribution"] = "; ".join(dict.fromkeys(attributions)) or None
    merged["may_train_other_models"] = all(r["may_train_other_models"] for r in rights)
    merged["derivatives_inherit_restrictions"] = any(
        r["derivatives_inherit_restrictions"] for r in rights
    )
    restrictions: list[dict[str, Any]] = []
    for r in rights:
        for item in r["use_restrictions"]:
            if item not in restrictions:
                restrictions.append(item)
    merged["use_restrictions"] = restrictions + _model_restrictions(bundle, chain)
    if merged["ownership"] == "not_stated":  # a base that states ownership speaks for it
        merged["ownership"] = next(
            (r["ownership"] for r in rights if r["ownership"] != "not_stated"), "not_stated"
        )
    merged["ai_disclosure"] = min(
        (r["ai_disclosure"] for r in rights), key=lambda s: _DISCLOSURE_ORDER[s]
    )
    flags = list(dict.fromkeys(r["legal_flag"] for r in rights if r.get("legal_flag")))
    if flags:
        merged["legal_flag"] = "; ".join(flags)
    merged["licence"] = {
        **own["licence"],
        "chain": [r["licence"]["id"] for r in rights],
        "clauses": [
            {"licence": r["licence"]["id"], "clause": r["licence"]["clause"]} for r in rights
        ],
    }
    return merged


def _model_restrictions(bundle: PolicyBundle, chain: list[str]) -> list[dict[str, Any]]:
    """Restrictions a registry entry adds itself (e.g. rights in a LoRA's training images)."""
    return [
        {**u.model_dump(exclude_none=True), "model": mid}
        for mid in chain
        for u in bundle.models.models[mid].use_restrictions
    ]
