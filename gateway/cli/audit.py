"""`gateway audit`: export decisions (CSV, JSON Lines, PDF report)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from gateway.cli.common import audit_log, load_settings
from gateway.domain import CATEGORIES, INTENDED_USES
from gateway.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from gateway.audit.bundle import BundleReport
    from gateway.audit.keyring import KeyRing
    from gateway.audit.search import DecisionFilters
    from gateway.db.models import Decision

audit_app = typer.Typer(help="Search, export and verify the audit trail.", no_args_is_help=True)

# query parameter -> command-line option, for error messages
_OPTION = {"intended_use": "--use", "licence": "--licence", "model": "--model"}


class ExportFormat(str, Enum):
    csv = "csv"
    jsonl = "jsonl"
    pdf = "pdf"


@contextmanager
def open_sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """A session factory on the configured database (migrated first), disposed after."""
    from gateway.db.engine import make_engine, make_session_factory
    from gateway.db.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url, settings.migrations_dir)
    engine = make_engine(settings.resolved_database_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def build_filters(
    sessions: sessionmaker[Session], tenant: str | None, **query: str | None
) -> DecisionFilters:
    """Filters from command-line options; typer.BadParameter names the option at fault."""
    from gateway.audit.search import DecisionFilters, FilterError, resolve_tenant
    from gateway.db.engine import unit_of_work

    tenant_id = None
    if tenant:
        with unit_of_work(sessions) as session:
            tenant_id = resolve_tenant(session, tenant)
        if tenant_id is None:
            raise typer.BadParameter(f"no tenant {tenant!r}", param_hint="--tenant")
    try:
        return DecisionFilters.from_query(tenant_id=tenant_id, **query)
    except FilterError as exc:
        hint = _OPTION.get(exc.param, f"--{exc.param}")
        raise typer.BadParameter(exc.message, param_hint=hint) from None


@audit_app.command("export")
def export(
    fmt: Annotated[ExportFormat, typer.Option("--format", help="csv, jsonl or pdf.")],
    output: Annotated[Path, typer.Option(help="File to write; '-' for standard output.")],
    since: Annotated[str | None, typer.Option(help="ISO 8601 date or time, inclusive.")] = None,
    until: Annotated[
        str | None, typer.Option(help="ISO 8601, exclusive; a bare date means its end.")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant id or name.")] = None,
    model: Annotated[str | None, typer.Option(help="Model id.")] = None,
    licence: Annotated[str | None, typer.Option(help="Licence id.")] = None,
    use: Annotated[
        str | None, typer.Option(help=f"Intended use ({', '.join(INTENDED_USES)}).")
    ] = None,
    outcome: Annotated[str | None, typer.Option(help="Outcome, e.g. prompt_blocked.")] = None,
    category: Annotated[
        str | None, typer.Option(help=f"Flagged category ({', '.join(CATEGORIES)}).")
    ] = None,
    user: Annotated[str | None, typer.Option(help="The requester's end-user id.")] = None,
    title: Annotated[str | None, typer.Option(help="PDF report title.")] = None,
    bundle: Annotated[
        bool,
        typer.Option(
            "--bundle",
            help="Write a signed zip (csv/jsonl records, their audit events, a checkpoint, "
            "inclusion proofs, manifest), checkable offline with `gateway audit verify-bundle`.",
        ),
    ] = False,
    verify: Annotated[
        bool,
        typer.Option(
            help="Check each csv/jsonl row against its events as it streams (the rows say so)."
        ),
    ] = True,
) -> None:
    """Export decisions, oldest first, streaming with constant memory."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from gateway.audit.search import count_decisions
    from gateway.db.engine import unit_of_work

    if bundle and fmt is ExportFormat.pdf:
        raise typer.BadParameter("a bundle holds csv or jsonl records", param_hint="--format")
    if bundle and str(output) == "-":
        raise typer.BadParameter(
            "a bundle is a zip file, not standard output", param_hint="--output"
        )
    settings = load_settings()
    with open_sessions(settings) as sessions:
        query = {
            "since": since,
            "until": until,
            "model": model,
            "licence": licence,
            "intended_use": use,
            "outcome": outcome,
            "category": category,
            "user": user,
        }
        filters = build_filters(sessions, tenant, **query)
        pinned = filters.until_at_most(datetime.now(UTC))
        with unit_of_work(sessions) as session:
            total = count_decisions(session, pinned)
        progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        with progress, _target(output) as out:
            task = progress.add_task(f"exporting {fmt.value}", total=total)

            def advance(n: int) -> None:
                progress.advance(task, n)

            made: BundleReport | None = None
            if bundle:
                made = _write_bundle(settings, fmt, out, sessions, pinned, advance)
            else:
                _write(fmt, out, sessions, filters, pinned, advance, title, verify)
    typer.echo(f"exported {total:,} decision(s) to {output}", err=True)
    if made is not None:
        fresh = " (signed now)" if made.fresh_checkpoint else ""
        typer.echo(
            f"bundle: {made.events:,} events proven against checkpoint {made.checkpoint_size}"
            f"{fresh}, root {made.merkle_root}, key {made.key_id}",
            err=True,
        )


def _write(
    fmt: ExportFormat,
    out: BinaryIO,
    sessions: sessionmaker[Session],
    filters: DecisionFilters,
    pinned: DecisionFilters,
    advance: Callable[[int], None],
    title: str | None,
    verify: bool = True,
) -> None:
    from gateway.audit.export import export_chunks
    from gateway.audit.report import DEFAULT_TITLE, policy_approvals, write_pdf_report
    from gateway.audit.search import iter_decision_batches
    from gateway.auth.names import load_names
    from gateway.db.engine import unit_of_work

    if fmt is ExportFormat.pdf:

        def decisions() -> Iterator[Decision]:
            for batch in iter_decision_batches(sessions, pinned):
                yield from batch
                advance(len(batch))

        with unit_of_work(sessions) as session:
            names = load_names(session)
            approvals = policy_approvals(session, names)
        write_pdf_report(
            out,
            decisions(),
            period=(filters.since, filters.until),
            verification=_verification(sessions),
            title=title or DEFAULT_TITLE,
            names=names,
            approvals=approvals,
        )
        return
    key = _public_key(sessions)
    chunks = export_chunks(
        fmt.value, sessions, pinned, progress=advance, public_key=key, verify=verify
    )
    for chunk in chunks:
        out.write(chunk)


def _write_bundle(
    settings: Settings,
    fmt: ExportFormat,
    out: BinaryIO,
    sessions: sessionmaker[Session],
    pinned: DecisionFilters,
    advance: Callable[[int], None],
) -> BundleReport:
    """The signed zip bundle; signs a fresh checkpoint when the latest does not cover it."""
    from gateway.audit.bundle import BundleError, write_bundle

    log = audit_log(settings)
    try:
        return write_bundle(out, sessions, log, pinned, fmt=fmt.value, progress=advance)
    except BundleError as exc:
        typer.echo(f"cannot write the bundle: {exc}", err=True)
        raise typer.Exit(1) from None


@contextmanager
def _target(output: Path) -> Iterator[BinaryIO]:
    """Standard output, or a temporary file renamed onto ``output`` only on success."""
    if str(output) == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    if not output.parent.is_dir():
        raise typer.BadParameter(f"no folder {output.parent}", param_hint="--output")
    partial = output.with_name(output.name + ".partial")
    try:
        with partial.open("wb") as out:
            yield out
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)


def _public_key(sessions: sessionmaker[Session]) -> str | KeyRing | None:
    """The keys checkpoints are verified with: those registered in the database, else the
    gateway's own public key (None when none is known)."""
    from gateway.audit.keyring import KeyRing
    from gateway.cli.trail import public_key
    from gateway.db.engine import unit_of_work

    with unit_of_work(sessions) as session:
        ring = KeyRing.registered(session)
    if ring.keys:
        return ring
    try:
        return public_key(load_settings(), None)
    except typer.BadParameter:
        return None


def _verification(sessions: sessionmaker[Session]) -> dict[str, Any] | None:
    """The trail's verification for the report (None when no public key is known)."""
    from gateway.audit.verify import verify_trail
    from gateway.db.engine import unit_of_work

    key = _public_key(sessions)
    if key is None:
        return None
    with unit_of_work(sessions) as session:
        return verify_trail(session, key).to_json()
