"""Helpers shared by the command groups: settings, a database unit of work, facts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from gateway.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from gateway.audit.events import AuditLog


def load_settings() -> Settings:
    return Settings()


@contextmanager
def open_database(settings: Settings) -> Iterator[Session]:
    """A unit of work on the configured database (migrated first)."""
    from gateway.db.engine import make_engine, make_session_factory, unit_of_work
    from gateway.db.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url, settings.migrations_dir)
    engine = make_engine(settings.resolved_database_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def parse_facts(assignments: list[str] | None) -> dict[str, Any]:
    from gateway.auth.tenants import parse_fact

    try:
        return dict(parse_fact(a) for a in assignments or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--fact") from None


def key_pepper(settings: Settings) -> str:
    return settings.key_pepper.get_secret_value() if settings.key_pepper else ""


def audit_log(settings: Settings) -> AuditLog:
    """The audit trail writer with this deployment's signing key (created on first use).

    The key must be registered (``audit_keys``), as for a replica: a command signing with
    another key would write checkpoints that verify refuses. Exit 1 saying so.
    """
    from gateway.audit.events import AuditLog
    from gateway.audit.keyring import KeyNotRegistered, ensure_registered
    from gateway.audit.signing import load_or_create_signer

    seed = settings.audit_signing_key.get_secret_value() if settings.audit_signing_key else None
    log = AuditLog(load_or_create_signer(settings.data_dir, seed), settings.checkpoint_every)
    try:
        with open_database(settings) as session:
            ensure_registered(session, log.signer, auto_register=settings.audit_key_auto_register)
    except KeyNotRegistered as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    return log
