"""What ``gateway models list`` shows: each model's registration, weights, pins and approval.

Registered means named in the models.yaml of the policy version in force (approved) or of a
pending draft (not yet approved). Installed and pinned are read from the weight folder: a
model is servable only when all three hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.models import PolicyVersion
from gateway.generation.loader import ModelUnavailable, check_weights, source_path
from gateway.policy.bundle import PolicyError, load_bundle, parse_bundle
from gateway.policy.schema import ModelEntry
from gateway.policy.store import DRAFT, IN_REVIEW, active_ref, decode_files, get_row
from gateway.settings import Settings


@dataclass(frozen=True)
class ModelRow:
    model_id: str
    licence: str
    registered: str
    installed: str
    pinned: str
    approved: str


def _pinned(model_id: str, entry: ModelEntry, model_dir: Path, installed: bool) -> str:
    if entry.pins == {}:
        return "no pins"
    count = "manifest" if entry.pins == "manifest" else f"{len(entry.pins)} files"
    if not installed:
        return count
    try:
        digest = check_weights(model_id, entry, model_dir)
    except ModelUnavailable as exc:
        return f"{count}, MISMATCH: {exc}"
    return f"{count}, match (weights {digest[:12]})"


def _row(
    model_id: str, entry: ModelEntry, model_dir: Path, registered: str, approved: str
) -> ModelRow:
    installed = source_path(entry, model_dir).exists()
    where = "yes" if installed else f"not installed ({source_path(entry, model_dir)})"
    pinned = _pinned(model_id, entry, model_dir, installed)
    return ModelRow(model_id, entry.licence, registered, where, pinned, approved)


def _pending(session: Session) -> list[tuple[int, str, dict[str, ModelEntry]]]:
    rows = session.scalars(
        select(PolicyVersion)
        .where(PolicyVersion.status.in_((DRAFT, IN_REVIEW)))
        .order_by(PolicyVersion.id)
    )
    out: list[tuple[int, str, dict[str, ModelEntry]]] = []
    for row in rows:
        try:
            models = dict(parse_bundle(decode_files(row.files)).models.models)
        except (PolicyError, ValidationError):
            continue  # a draft that does not validate registers nothing yet
        out.append((row.id, row.status.replace("_", " "), models))
    return out


def model_rows(session: Session, settings: Settings) -> list[ModelRow]:
    """Every model of the version in force, then those only a pending draft registers."""
    model_dir = settings.resolved_model_dir
    ref = active_ref(session)
    if ref is None:  # nothing imported yet: the seed folder is what first start will approve
        seed = load_bundle(settings.policy_dir).models.models
        return [
            _row(m, e, model_dir, "seed folder", "no (no version in force yet)")
            for m, e in seed.items()
        ]
    active = parse_bundle(decode_files(get_row(session, ref.id).files)).models.models
    pending = _pending(session)
    rows: list[ModelRow] = []
    for model_id, entry in active.items():
        changes = [
            f"draft {i} ({s}) changes it"
            for i, s, m in pending
            if m.get(model_id) not in (None, entry)
        ]
        approved = f"yes (v{ref.id})" + ("; " + "; ".join(changes) if changes else "")
        rows.append(_row(model_id, entry, model_dir, f"v{ref.id}", approved))
    seen = set(active)
    for draft_id, state, models in pending:
        for model_id, entry in models.items():
            if model_id in seen:
                continue
            seen.add(model_id)
            rows.append(
                _row(
                    model_id,
                    entry,
                    model_dir,
                    f"draft {draft_id}",
                    f"no (draft {draft_id} is {state})",
                )
            )
    return rows
