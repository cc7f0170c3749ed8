"""First start: the seed bundle in ``policies/`` becomes the first published policy version."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.db.models import AuditHead, PolicyVersion
from gateway.policy.bundle import PolicyBundle
from gateway.policy.store import (
    DRAFT,
    PUBLISHED,
    SEED_PRINCIPAL,
    active_ref,
    insert_version,
    now_utc,
)

log = logging.getLogger(__name__)


def import_seed(session: Session, bundle: PolicyBundle) -> bool:
    """Publish ``bundle`` when the database has never had a published version.

    Replicas starting together serialise on the audit head row (the same lock every audit
    append takes), so exactly one imports it. Returns True when this call did.

    The import is a bootstrap, not a person's workflow action, so it is not an audit event:
    the row itself (``created_by``/``decided_by`` = ``system:seed``) and every decision's
    ``policy_version`` record it. Every later change is an event (see ``workflow.py``).
    """
    session.execute(select(AuditHead.seq).where(AuditHead.id == 1).with_for_update())
    if session.scalar(select(PolicyVersion.id).where(PolicyVersion.status != DRAFT).limit(1)):
        return False
    at = now_utc()
    row = insert_version(
        session,
        bundle.files,
        status=PUBLISHED,
        principal=SEED_PRINCIPAL,
        base_version=None,
        note="seed bundle imported on first start",
        when=at,
    )
    row.decided_by = SEED_PRINCIPAL
    row.decided_at = at
    row.effective_at = at
    log.info("imported the seed policy bundle as version %d (%s)", row.id, bundle.version[:12])
    return True


def has_active(session: Session) -> bool:
    return active_ref(session) is not None
