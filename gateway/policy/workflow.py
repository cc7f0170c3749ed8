"""The policy workflow legal teams use: drafts, validation, tests, replay, four-eyes publishing.

``PolicyService`` is what the HTTP routes (``api/policies.py``) and the console call. Every
workflow action is an audit event in the same transaction as the change it records.

Submitting and approving run the draft's validation, licence cases and content cases
(``draft_checks.py``) and refuse a draft that fails any.

States: ``draft`` (editable by legal editors) -> ``in_review`` (frozen, awaiting approval)
-> ``published`` (in force from ``effective_at``) -> ``retired`` (a later version took over);
``in_review`` -> ``rejected`` (with a reason). The approver must be a different principal
from every author of the draft (``four_eyes_required``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from gateway.audit.events import AuditLog
from gateway.db.engine import unit_of_work
from gateway.db.models import PolicyVersion
from gateway.domain import Principal, Role
from gateway.errors import GatewayError
from gateway.policy.bundle import PolicyError, bundle_version, parse_bundle
from gateway.policy.draft_checks import diff_files, ready, tests_json, validation_json
from gateway.policy.replay import replay_decisions
from gateway.policy.store import (
    DRAFT,
    IN_REVIEW,
    PUBLISHED,
    REJECTED,
    active_ref,
    decode_files,
    encode_files,
    get_row,
    insert_version,
    list_rows,
    now_utc,
    retire_superseded,
    version_json,
)
from gateway.runtime import Runtime

MAX_FILES, MAX_FILE_BYTES = 200, 1_000_000
FILE_PATH = r"([^/\\.\x00][^/\\\x00]*/)*[^/\\.\x00][^/\\\x00]*\.yaml"  # no NUL: PostgreSQL
"""A draft's file name: a relative path of non-empty segments, none starting with a dot."""


def principal_id(principal: Principal) -> str:
    """How a person appears in the workflow: their API key id (never the secret)."""
    return f"key:{principal.key_id}"


def _require(principal: Principal, role: Role, action: str) -> None:
    if not principal.has(role):
        raise GatewayError(403, "insufficient_role", f"{action} needs the {role.value} role")


def _check_files(files: Mapping[str, str | None]) -> None:
    if len(files) > MAX_FILES:
        raise GatewayError(422, "invalid_files", f"at most {MAX_FILES} files", param="files")
    for name, text in files.items():
        if re.fullmatch(FILE_PATH, name) is None:
            raise GatewayError(
                422,
                "invalid_files",
                f"{name!r}: a file must be a relative path ending in .yaml",
                param=f"files.{name}",
            )
        if text is not None and len(text.encode("utf-8")) > MAX_FILE_BYTES:
            raise GatewayError(
                422, "invalid_files", f"{name!r} is larger than 1 MB", param=f"files.{name}"
            )
        if text is not None and "\x00" in text:
            raise GatewayError(
                422, "invalid_files", f"{name!r} contains a NUL character", param=f"files.{name}"
            )


def _check_note(note: str | None) -> None:
    if note is not None and "\x00" in note:
        raise GatewayError(
            422, "invalid_note", "note must not contain NUL characters", param="note"
        )


def record_draft(
    session: Session,
    audit: AuditLog,
    files: Mapping[str, str],
    *,
    by: str,
    note: str,
    source: str,
) -> PolicyVersion:
    """A new draft of ``files`` authored by ``by`` (e.g. ``cli:operator``), on the version in
    force, with its ``policy.draft_created`` event in the same transaction.

    The command line's way in (``gateway policy import``, ``gateway models add``): the draft
    then goes through review and a second person's approval like any other.
    """
    ref = active_ref(session)
    row = insert_version(
        session,
        files,
        status=DRAFT,
        principal=by,
        base_version=ref.id if ref else None,
        note=note,
    )
    audit.append(
        session,
        "policy.draft_created",
        {"version": row.id, "sha256": row.sha256, "status": DRAFT, "by": by, "source": source},
    )
    return row


class PolicyService:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    # -- reading ---------------------------------------------------------------------------
    def active(self) -> dict[str, Any]:
        with unit_of_work(self._rt.sessions) as session:
            ref = active_ref(session)
            if ref is None:
                raise GatewayError(404, "policy_version_not_found", "no policy version in force")
            out = version_json(get_row(session, ref.id))
        out["enforced_here"] = self._rt.policy.current().version_id
        return out

    def versions(self) -> list[dict[str, Any]]:
        with unit_of_work(self._rt.sessions) as session:
            return [version_json(row) for row in list_rows(session)]

    def version(self, version_id: int) -> dict[str, Any]:
        with unit_of_work(self._rt.sessions) as session:
            return version_json(get_row(session, version_id), files=True)

    def files(self, version_id: int) -> dict[str, str]:
        with unit_of_work(self._rt.sessions) as session:
            return decode_files(get_row(session, version_id).files)

    def diff(self, a: int, b: int) -> dict[str, Any]:
        return {"a": a, "b": b, "files": diff_files(self.files(a), self.files(b))}

    # -- drafts ----------------------------------------------------------------------------
    def create_draft(
        self,
        principal: Principal,
        base_version: int | None,
        files: Mapping[str, str | None] | None,
        note: str | None,
    ) -> dict[str, Any]:
        _require(principal, Role.LEGAL_EDITOR, "creating a draft")
        _check_files(files or {})
        _check_note(note)
        who = principal_id(principal)
        with unit_of_work(self._rt.sessions) as session:
            if base_version is None:
                ref = active_ref(session)
                base_version = ref.id if ref is not None else None
            base = decode_files(get_row(session, base_version).files) if base_version else {}
            merged = _overlay(base, files or {})
            row = insert_version(
                session,
                merged,
                status=DRAFT,
                principal=who,
                base_version=base_version,
                note=note,
            )
            self._event(session, principal, "policy.draft_created", row, {"base": base_version})
            return self._draft_json(row, merged)

    def update_draft(
        self,
        principal: Principal,
        draft_id: int,
        files: Mapping[str, str | None],
        note: str | None = None,
    ) -> dict[str, Any]:
        _require(principal, Role.LEGAL_EDITOR, "editing a draft")
        _check_files(files)
        _check_note(note)
        who = principal_id(principal)
        with unit_of_work(self._rt.sessions) as session:
            row = self._draft(session, draft_id)
            merged = _overlay(decode_files(row.files), files)
            row.files = encode_files(merged)
            row.sha256 = bundle_version(merged)
            row.updated_at = now_utc()
            if note is not None:
                row.note = note
            if who not in row.authors:
                row.authors = [*row.authors, who]
            self._event(session, principal, "policy.draft_updated", row, {"files": sorted(files)})
            return self._draft_json(row, merged)

    def validate(self, draft_id: int) -> dict[str, Any]:
        return validation_json(self.files(draft_id))

    def test(self, draft_id: int) -> dict[str, Any]:
        return tests_json(self.files(draft_id), self._rt.draft_classifier)

    def replay(
        self, principal: Principal, draft_id: int, limit: int, since: datetime | None = None
    ) -> dict[str, Any]:
        if not principal.has(Role.LEGAL_APPROVER):  # an approver replays what they review
            _require(principal, Role.LEGAL_EDITOR, "replaying a draft")
        files = self.files(draft_id)
        try:
            bundle = parse_bundle(files)
        except PolicyError as exc:
            raise GatewayError(
                422,
                "policy_invalid",
                "the draft does not validate; fix it before replaying",
                extra={"errors": [i.to_json() for i in exc.issues]},
            ) from None
        with unit_of_work(self._rt.sessions) as session:
            return replay_decisions(
                session,
                bundle,
                limit=limit,
                since=since,
                list_tenant=None if Role.ADMIN in principal.roles else principal.tenant_id,
            )

    # -- review ----------------------------------------------------------------------------
    def submit(self, principal: Principal, draft_id: int) -> dict[str, Any]:
        _require(principal, Role.LEGAL_EDITOR, "submitting a draft")
        with unit_of_work(self._rt.sessions) as session:
            row = self._draft(session, draft_id)
            files = decode_files(row.files)
            ready(files, self._rt.draft_classifier)
            row.status = IN_REVIEW
            row.submitted_by = principal_id(principal)
            row.submitted_at = now_utc()
            row.updated_at = row.submitted_at
            self._event(session, principal, "policy.submitted", row, {})
            return version_json(row)

    def approve(
        self, principal: Principal, draft_id: int, effective_at: datetime | None = None
    ) -> dict[str, Any]:
        _require(principal, Role.LEGAL_APPROVER, "approving a policy version")
        who = principal_id(principal)
        with unit_of_work(self._rt.sessions) as session:
            row = self._in_review(session, draft_id)
            if who in row.authors or who == row.submitted_by:
                raise GatewayError(
                    403,
                    "four_eyes_required",
                    "the approver must be a different person from every author of the draft",
                )
            ready(decode_files(row.files), self._rt.draft_classifier)
            at = now_utc()
            row.status = PUBLISHED
            row.decided_by = who
            row.decided_at = at
            row.updated_at = at
            row.effective_at = max(effective_at, at) if effective_at is not None else at
            self._event(
                session,
                principal,
                "policy.published",
                row,
                {"effective_at": row.effective_at.isoformat()},
            )
            ref = active_ref(session, at)
            if ref is not None and ref.id == row.id:
                retire_superseded(session, ref, at)
            out = version_json(row)
        self._rt.policy.refresh()  # this replica switches now; the others within seconds
        return out

    def reject(self, principal: Principal, draft_id: int, reason: str) -> dict[str, Any]:
        _require(principal, Role.LEGAL_APPROVER, "rejecting a policy version")
        if not reason.strip():
            raise GatewayError(422, "invalid_reason", "a rejection needs a reason", param="reason")
        with unit_of_work(self._rt.sessions) as session:
            row = self._in_review(session, draft_id)
            at = now_utc()
            row.status = REJECTED
            row.decided_by = principal_id(principal)
            row.decided_at = at
            row.updated_at = at
            row.reason = reason
            self._event(session, principal, "policy.rejected", row, {"reason": reason})
            return version_json(row)

    # -- helpers ---------------------------------------------------------------------------
    def _draft(self, session: Session, draft_id: int) -> PolicyVersion:
        row = get_row(session, draft_id)
        if row.status != DRAFT:
            raise GatewayError(
                409,
                "policy_version_not_draft",
                f"policy version {draft_id} is {row.status}, not an editable draft",
            )
        return row

    def _in_review(self, session: Session, draft_id: int) -> PolicyVersion:
        row = get_row(session, draft_id)
        if row.status != IN_REVIEW:
            raise GatewayError(
                409,
                "policy_version_not_in_review",
                f"policy version {draft_id} is {row.status}; only submitted drafts can be "
                "approved or rejected",
            )
        return row

    def _draft_json(self, row: PolicyVersion, files: Mapping[str, str]) -> dict[str, Any]:
        return {
            "draft_id": row.id,
            **version_json(row),
            "validation": validation_json(files),
        }

    def _event(
        self,
        session: Session,
        principal: Principal,
        kind: str,
        row: PolicyVersion,
        extra: dict[str, Any],
    ) -> None:
        session.flush()
        self._rt.audit.append(
            session,
            kind,
            {
                "version": row.id,
                "sha256": row.sha256,
                "status": row.status,
                "by": principal_id(principal),
                **extra,
            },
            tenant_id=principal.tenant_id,
        )


def _overlay(base: Mapping[str, str], files: Mapping[str, str | None]) -> dict[str, str]:
    merged = dict(base)
    for name, text in files.items():
        if text is None:
            merged.pop(name, None)
        else:
            merged[name] = text
    return merged
