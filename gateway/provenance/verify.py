"""Verify an image: its C2PA manifest, its watermark, and which decision (if any) made it.

An image counts as *issued by this gateway* only when a delivered decision of this gateway
is found for it: through a valid manifest signed with this gateway's certificate that names
the decision, or, when the manifest is gone or broken, through the watermark payload (which
the decision reserved; the record must say the mark was embedded). A detected mark that
names no delivered decision is not a claim.

``decision_id``, ``rights`` and ``decision`` are answered only to the decision's tenant or an
admin; everything else to anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.models import Decision
from gateway.provenance.c2pa_io import C2paReading
from gateway.provenance.manifest import GATEWAY_ASSERTION
from gateway.provenance.stamp import ProvenanceService
from gateway.provenance.watermark import Reading

DELIVERED = ("allowed", "partially_filtered")


@dataclass(frozen=True)
class Inspection:
    c2pa: C2paReading
    watermark: Reading
    signed_by_us: bool  # a valid manifest whose signing certificate is this gateway's


def inspect(service: ProvenanceService, raw: bytes, mime: str, image: Image.Image) -> Inspection:
    reading = service.read_manifest(raw, mime)
    ours = reading.valid and reading.signer_serial == service.credentials.certificate_serial
    return Inspection(reading, service.watermarker.read(image), ours)


def _delivered_with_mark(decision: Decision) -> bool:
    images = (decision.record or {}).get("images") or []
    return decision.outcome in DELIVERED and any(
        (i.get("provenance") or {}).get("watermark") == "embedded" for i in images
    )


def find_decision(session: Session, found: Inspection) -> Decision | None:
    """The delivered decision this image came from, or None (never a guess)."""
    if found.signed_by_us:
        named = (found.c2pa.assertion(GATEWAY_ASSERTION) or {}).get("decision_id")
        decision = session.get(Decision, named) if isinstance(named, str) else None
        if decision is not None and decision.outcome in DELIVERED:
            return decision
    if found.watermark.detected:
        rows = session.scalars(
            select(Decision).where(Decision.watermark == found.watermark.payload)
        ).all()
        matches = [d for d in rows if _delivered_with_mark(d)]
        if len(matches) == 1:
            return matches[0]
    return None


def decision_summary(decision: Decision) -> dict[str, Any]:
    record = decision.record or {}
    return {
        "id": decision.id,
        "outcome": decision.outcome,
        "created_at": decision.created_at.isoformat(),
        "model": record.get("model") or {"id": decision.model_id},
        "licence": decision.licence_id,
        "intended_use": decision.intended_use,
        "policy_version": decision.policy_version,
        "images": [
            {"index": i.get("index"), "sha256": i.get("sha256"), **(i.get("provenance") or {})}
            for i in record.get("images") or []
            if i.get("action") == "allow"
        ],
    }


def verification_json(
    found: Inspection, decision: Decision | None, visible: bool
) -> dict[str, Any]:
    """The verify answer; ``visible``: the caller may see this decision."""
    c2pa = found.c2pa
    out: dict[str, Any] = {
        "c2pa": {
            "present": c2pa.present,
            "valid": c2pa.valid,
            "validation_state": c2pa.validation_state,
            "errors": c2pa.errors,
            "signed_by_this_gateway": found.signed_by_us,
        },
        "watermark": {"detected": found.watermark.detected, "payload": found.watermark.payload},
        "decision_id": None,
        "issued_by_this_gateway": decision is not None,
    }
    if decision is not None and visible:
        out["decision_id"] = decision.id
        out["rights"] = (decision.record or {}).get("rights")
        out["decision"] = decision_summary(decision)
    return out
