"""Policy versions in the database: reading, writing and finding the active one.

A version holds a whole bundle (every file, keyed by its path inside ``policies/``) and its
content sha256 (``bundle_version``, the same hash every decision records). The active
version is the published one with the latest ``effective_at`` that is not in the future;
publishing with a future ``effective_at`` schedules the switch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from gateway.db.models import PolicyVersion
from gateway.errors import GatewayError
from gateway.policy.bundle import bundle_version

DRAFT, IN_REVIEW, PUBLISHED, RETIRED, REJECTED = (
    "draft",
    "in_review",
    "published",
    "retired",
    "rejected",
)
SEED_PRINCIPAL = "system:seed"


def encode_files(files: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(files.items())), ensure_ascii=False, separators=(",", ":"))


def decode_files(text: str) -> dict[str, str]:
    data = json.loads(text)
    return {str(k): str(v) for k, v in data.items()}


@dataclass(frozen=True)
class ActiveRef:
    id: int
    sha256: str


def now_utc() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    value = _aware(value)
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def version_json(
    row: PolicyVersion, *, files: bool = False, now: datetime | None = None
) -> dict[str, Any]:
    effective = _aware(row.effective_at)
    state = row.status
    if state == PUBLISHED and effective is not None and effective > (now or now_utc()):
        state = "scheduled"
    out: dict[str, Any] = {
        "id": row.id,
        "status": row.status,
        "state": state,
        "sha256": row.sha256,
        "base_version": row.base_version,
        "note": row.note,
        "authors": list(row.authors),
        "created_by": row.created_by,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "submitted_by": row.submitted_by,
        "submitted_at": iso(row.submitted_at),
        "approved_by": row.decided_by if row.status in (PUBLISHED, RETIRED) else None,
        "rejected_by": row.decided_by if row.status == REJECTED else None,
        "decided_at": iso(row.decided_at),
        "reason": row.reason,
        "effective_at": iso(row.effective_at),
        "retired_at": iso(row.retired_at),
    }
    if files:
        out["files"] = decode_files(row.files)
    return out


def get_row(session: Session, version_id: int) -> PolicyVersion:
    row = session.get(PolicyVersion, version_id)
    if row is None:
        raise GatewayError(
            404, "policy_version_not_found", f"no policy version {version_id}", param="id"
        )
    return row


def list_rows(session: Session) -> list[PolicyVersion]:
    return list(session.scalars(select(PolicyVersion).order_by(PolicyVersion.id.desc())))


def active_ref(session: Session, now: datetime | None = None) -> ActiveRef | None:
    """The version in force at ``now``: cheap enough to poll every few seconds."""
    row = session.execute(
        select(PolicyVersion.id, PolicyVersion.sha256)
        .where(
            PolicyVersion.status == PUBLISHED,
            PolicyVersion.effective_at <= (now or now_utc()),
        )
        .order_by(PolicyVersion.effective_at.desc(), PolicyVersion.id.desc())
        .limit(1)
    ).first()
    return ActiveRef(int(row[0]), str(row[1])) if row is not None else None


def retire_superseded(session: Session, active: ActiveRef, now: datetime | None = None) -> int:
    """Mark published versions that an in-force later one replaced as retired (idempotent)."""
    when = now or now_utc()
    current = get_row(session, active.id)
    result = session.execute(
        update(PolicyVersion)
        .where(
            PolicyVersion.status == PUBLISHED,
            PolicyVersion.id != active.id,
            PolicyVersion.effective_at <= current.effective_at,
        )
        .values(status=RETIRED, retired_at=when)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def count_versions(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(PolicyVersion)) or 0)


def insert_version(
    session: Session,
    files: Mapping[str, str],
    *,
    status: str,
    principal: str,
    base_version: int | None,
    note: str | None,
    when: datetime | None = None,
) -> PolicyVersion:
    at = when or now_utc()
    row = PolicyVersion(
        status=status,
        sha256=bundle_version(files),
        files=encode_files(files),
        base_version=base_version,
        note=note,
        authors=[principal],
        created_by=principal,
        created_at=at,
        updated_at=at,
    )
    session.add(row)
    session.flush()
    return row


def write_files(directory: Path, files: Mapping[str, str]) -> None:
    """Write a bundle out to a folder (``gateway policy export``)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        target = (directory / name).resolve()
        if directory.resolve() not in target.parents:
            raise ValueError(f"refusing to write outside {directory}: {name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
