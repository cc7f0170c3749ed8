"""`gateway audit verify | checkpoint | erase`: the trail's integrity and erasure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.audit import audit_app
from gateway.cli.common import audit_log, load_settings, open_database
from gateway.settings import Settings

SHOWN = 20  # row findings printed under the summary


def public_key(settings: Settings, given: str | None) -> str:
    """The checkpoint-signing public key: given (file or base64), or the configured one."""
    from gateway.audit.signing import KEY_FILE, Signer

    if given:
        path = Path(given)
        return path.read_text(encoding="ascii").strip() if path.is_file() else given.strip()
    if settings.audit_signing_key:
        return Signer.from_seed_b64(settings.audit_signing_key.get_secret_value()).public_key_b64
    pub = settings.data_dir / f"{KEY_FILE}.pub"
    if not pub.is_file():
        raise typer.BadParameter(
            f"no public key at {pub}; pass --public-key", param_hint="--public-key"
        )
    return pub.read_text(encoding="ascii").strip()


@audit_app.command("verify")
def verify(
    public_key_arg: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            help="Accept only this public key (file or base64); default: every key "
            "registered in the database (`gateway audit keys list`), or the gateway's own "
            "when none is.",
        ),
    ] = None,
    from_last_checkpoint: Annotated[
        bool,
        typer.Option(
            help="Trust the last signed checkpoint; check only the events that follow "
            "(decision rows are still all checked)."
        ),
    ] = False,
    rows: Annotated[
        bool,
        typer.Option(help="Check decisions and personal_data rows against their events."),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
) -> None:
    """Recompute the hash chain and Merkle roots, and check every decision row against its
    events; exit 1 naming the first bad sequence, or each decision, table and field that
    does not match."""
    from gateway.audit.keyring import KeyRing
    from gateway.audit.verify import verify_trail

    settings = load_settings()
    key: str | None = public_key(settings, public_key_arg) if public_key_arg else None
    if key is None:
        with open_database(settings) as session:
            registered = bool(KeyRing.registered(session).keys)
        if not registered:  # a database no replica has started on since keys were registered
            key = public_key(settings, None)
    with open_database(settings) as session:
        report = verify_trail(session, key, from_last_checkpoint=from_last_checkpoint, rows=rows)
    typer.echo(json.dumps(report.to_json(), indent=2) if as_json else report.summary)
    if not as_json:
        for error in report.row_errors[:SHOWN]:
            typer.echo(f"  {error.decision_id}  {error.field}: {error.reason}")
        if report.row_error_count > SHOWN:
            typer.echo(f"  … {report.row_error_count - SHOWN} more (--json lists up to 1000)")
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("checkpoint")
def checkpoint() -> None:
    """Sign a checkpoint of the trail as it stands now."""
    from gateway.audit.events import checkpoint_json

    settings = load_settings()
    log = audit_log(settings)
    with open_database(settings) as session:
        made = log.checkpoint(session)
        typer.echo(json.dumps(checkpoint_json(made)) if made else "nothing new to checkpoint")


@audit_app.command("erase")
def erase(
    user: Annotated[str, typer.Option(help="The end-user id given in requests (`user`).")],
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's decisions.")] = None,
) -> None:
    """Erase one person's prompts and user id; the trail stays verifiable."""
    from gateway.audit.erase import erase_user
    from gateway.auth.tenants import TenantNotFound, get_tenant

    settings = load_settings()
    log = audit_log(settings)
    with open_database(settings) as session:
        tenant_id = None
        if tenant:
            try:
                tenant_id = get_tenant(session, tenant).id
            except TenantNotFound:
                raise typer.BadParameter(f"no tenant {tenant!r}", param_hint="--tenant") from None
        ids = erase_user(session, log, user, tenant_id=tenant_id)
    typer.echo(f"erased {len(ids)} decision(s) of user {user!r}")
