"""A decision's licence verdict and output rights as sentences a legal reader can check.

The record keeps the structured fields (``licence`` and ``rights`` of a decision); this only
words them, each sentence with the clause it rests on (``§…`` of the licence named).
"""

from __future__ import annotations

from typing import Any

USES = {
    "commercial": "commercial use",
    "internal_business": "internal business use",
    "research": "research",
    "personal": "personal use",
    "hosted_service": "running a hosted service",
    "distribute": "distribution",
}
COMMERCIAL = {
    "allowed": "Outputs may be used commercially",
    "denied": "Outputs may not be used commercially",
    "conditional": "Outputs may be used commercially only under the licence's conditions",
    "unknown": "Whether outputs may be used commercially is unknown; treat it as not allowed",
}
OWNERSHIP = {
    "licensee": "The licensee owns the outputs",
    "licensor_claims_none": "The licensor claims no rights in the outputs",
    "not_stated": "The licence does not say who owns the outputs",
}
DISCLOSURE = {
    "required": "Outputs must be disclosed as AI-generated",
    "law_dependent": "Whether outputs must be disclosed as AI-generated depends on local law",
    "not_required": "The licence does not require disclosing outputs as AI-generated",
}


def _cite(licence: str | None, clause: str | None) -> str:
    if clause and licence:
        return f" ({licence} {clause})"
    if clause:
        return f" ({clause})"
    return f" ({licence})" if licence else ""


def _use(use: str | None) -> str:
    return USES.get(use or "", (use or "an unstated use").replace("_", " "))


def _fact(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if value is None:
        return "not given"
    if isinstance(value, list):
        return ", ".join(_fact(v) for v in value) or "none"
    return str(value)


def licence_sentences(licence: dict[str, Any]) -> list[str]:
    """The verdict, why, what was relied on and what must be done."""
    chain = licence.get("model_chain") or []
    allowed = licence.get("decision") == "allow"
    verb = "allows" if allowed else "does not allow"
    via = f" (through {' → '.join(chain)})" if len(chain) > 1 else ""
    name = licence.get("id") or licence.get("licence")
    out = [f"Licence {name}{via} {verb} {_use(licence.get('intended_use'))}."]
    for reason in licence.get("reasons", []):
        message = str(reason.get("message") or reason.get("code", "")).rstrip(".")
        cite = _cite(reason.get("licence"), reason.get("clause"))
        out.append(f"{message[:1].upper()}{message[1:]}{cite}.")
        if reason.get("legal_flag"):
            out.append(f"Flag for legal review: {reason['legal_flag']}.")
    facts = licence.get("facts_used") or {}
    if facts:
        listed = "; ".join(f"{k.replace('_', ' ')}: {_fact(v)}" for k, v in sorted(facts.items()))
        out.append(f"Tenant facts relied on: {listed}.")
    for ob in licence.get("obligations", []):
        text = str(ob.get("text", "")).rstrip(".")
        out.append(f"Obligation: {text}{_cite(ob.get('licence'), ob.get('clause'))}.")
    return out


def rights_sentences(rights: dict[str, Any]) -> list[str]:
    """What the requester may do with the outputs, each with its clause."""
    ref = rights.get("licence") or {}
    lic, clause = ref.get("id"), ref.get("clause")
    cite = _cite(lic, clause)
    out: list[str] = []
    if "commercial_use" in rights:
        out.append(f"{COMMERCIAL.get(rights['commercial_use'], rights['commercial_use'])}{cite}.")
    if "ownership" in rights:
        out.append(f"{OWNERSHIP.get(rights['ownership'], rights['ownership'])}{cite}.")
    attribution = rights.get("attribution")
    out.append(
        f"Attribution required: {attribution}{cite}."
        if attribution
        else "No attribution is required."
    )
    if "may_train_other_models" in rights:
        may = "may" if rights["may_train_other_models"] else "may not"
        out.append(f"Outputs {may} be used to train other models{cite}.")
    if "derivatives_inherit_restrictions" in rights:
        do = "carry" if rights["derivatives_inherit_restrictions"] else "do not carry"
        out.append(f"Derivatives {do} the licence's use restrictions{cite}.")
    for item in rights.get("use_restrictions", []):
        where = ", ".join(item.get("applies_to") or []) or "model, derivatives, outputs"
        source = f" of model {item['model']}" if item.get("model") else ""
        what = f": {'; '.join(item['items'])}" if item.get("items") else ""
        note = f" {item['note'].rstrip('.')}." if item.get("note") else ""
        out.append(
            f"Use restrictions {item.get('ref')}{source} apply to {where}{what}"
            f"{_cite(lic, item.get('clause'))}.{note}"
        )
    if "ai_disclosure" in rights:
        out.append(f"{DISCLOSURE.get(rights['ai_disclosure'], rights['ai_disclosure'])}{cite}.")
    if rights.get("legal_flag"):
        out.append(f"Flag for legal review: {rights['legal_flag']}.")
    chain = [c.get("licence", "") + " " + (c.get("clause") or "") for c in ref.get("clauses", [])]
    if len(chain) > 1:
        out.append(f"Licences in the model's chain: {'; '.join(s.strip() for s in chain)}.")
    return out
