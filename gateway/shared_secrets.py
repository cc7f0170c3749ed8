"""Secrets every replica must hold alike, pinned by fingerprint in the database.

A console cookie made by one replica must open on another; an image watermarked or C2PA-signed
by one must be recognised by another's ``/v1/provenance/verify``. Each of these secrets falls
back to a file made in the replica's own data dir when its setting is unset, which forks them
as soon as there are two replicas. So the first replica to start records each one's
fingerprint (a domain-separated SHA-256: the secret cannot be recovered from it) in
``shared_secrets``, and a replica whose secret differs refuses to start, naming the setting to
share. Rotating one on purpose: ``gateway replicas reset-secret NAME``, then restart every
replica with the new value.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from gateway.db.models import SharedSecret
from gateway.settings import Settings

SecretName = Literal["console_secret", "watermark_key", "c2pa_certificate"]

log = logging.getLogger(__name__)

SETTING: Mapping[SecretName, str] = {
    "console_secret": "GATEWAY_CONSOLE_SECRET",
    "watermark_key": "GATEWAY_WATERMARK_KEY",
    "c2pa_certificate": "GATEWAY_C2PA_CERT_CHAIN and GATEWAY_C2PA_PRIVATE_KEY",
}


class SecretMismatch(RuntimeError):
    """This replica holds another secret than the replicas before it: it must not start."""


@dataclass(frozen=True)
class PinnedSecret:
    name: str
    fingerprint: str
    instance_id: str
    recorded_at: datetime


def fingerprint(name: str, secret: bytes) -> str:
    return hashlib.sha256(
        b"gateway shared secret\x00" + name.encode() + b"\x00" + secret
    ).hexdigest()


def replica_secrets(settings: Settings, c2pa_certificate_sha256: str) -> dict[SecretName, bytes]:
    """This replica's shared secrets, as its console and provenance service use them."""
    from gateway.console.session import load_or_create_secret
    from gateway.provenance.credentials import load_or_create_watermark_key

    console = settings.console_secret.get_secret_value() if settings.console_secret else None
    watermark = settings.watermark_key.get_secret_value() if settings.watermark_key else None
    unshared = [
        name
        for name, value in (
            ("GATEWAY_AUDIT_SIGNING_KEY", settings.audit_signing_key),
            ("GATEWAY_CONSOLE_SECRET", console),
            ("GATEWAY_WATERMARK_KEY", watermark),
            ("GATEWAY_C2PA_CERT_CHAIN", settings.c2pa_cert_chain),
        )
        if not value
    ]
    if unshared and settings.resolved_database_url.startswith("postgresql"):
        log.warning(
            "%s unset: this replica uses keys made in its own data dir, so another replica "
            "will refuse to start until they are shared (docs/operators.md, 'Several replicas')",
            ", ".join(unshared),
        )
    return {
        "console_secret": load_or_create_secret(settings.data_dir, console),
        "watermark_key": load_or_create_watermark_key(settings.data_dir, watermark),
        "c2pa_certificate": bytes.fromhex(c2pa_certificate_sha256),
    }


def check_shared_secrets(
    session: Session, secrets: Mapping[SecretName, bytes], instance_id: str
) -> list[str]:
    """Record the fingerprints not yet pinned; raise :class:`SecretMismatch` on a difference.

    Returns the names this call pinned (the first start's).
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE shared_secrets IN SHARE ROW EXCLUSIVE MODE"))
    pinned: list[str] = []
    wrong: list[str] = []
    for name, secret in secrets.items():
        mine = fingerprint(name, secret)
        row = session.get(SharedSecret, name)
        if row is None:
            session.add(
                SharedSecret(
                    name=name,
                    fingerprint=mine,
                    instance_id=instance_id,
                    recorded_at=datetime.now(UTC),
                )
            )
            pinned.append(name)
        elif row.fingerprint != mine:
            wrong.append(
                f"{name} differs from the one replica {row.instance_id!r} recorded on "
                f"{row.recorded_at:%Y-%m-%d %H:%M}: set {SETTING[name]} to the value every "
                "replica shares"
            )
    if wrong:
        raise SecretMismatch(
            "this replica's secrets differ from the other replicas' (docs/operators.md, "
            "'Several replicas'): "
            + "; ".join(wrong)
            + ". To rotate one on purpose: `gateway replicas reset-secret NAME`."
        )
    session.flush()
    return pinned


def list_pinned(session: Session) -> list[PinnedSecret]:
    rows = session.scalars(select(SharedSecret).order_by(SharedSecret.name))
    return [PinnedSecret(r.name, r.fingerprint, r.instance_id, r.recorded_at) for r in rows]


def reset_pinned(session: Session, name: str) -> bool:
    """Forget a pinned fingerprint (the next replica to start pins its own); False if none."""
    row = session.get(SharedSecret, name)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True
