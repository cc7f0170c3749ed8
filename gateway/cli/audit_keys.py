"""`gateway audit keys register | list | retire`: the public keys verify accepts.

Every replica's checkpoint-signing key must be registered before it starts (docs/audit.md,
"Signing keys and rotation").
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gateway.cli.audit import audit_app
from gateway.cli.common import load_settings, open_database

keys_app = typer.Typer(
    help="The audit public keys every replica's checkpoints are verified with.",
    no_args_is_help=True,
)
audit_app.add_typer(keys_app, name="keys")


@keys_app.command("register")
def register(
    public_key_arg: Annotated[
        str | None,
        typer.Option(
            "--public-key",
            help="Public key file (audit-signing-key.pub) or base64; default: this "
            "gateway's own (GATEWAY_AUDIT_SIGNING_KEY or the data dir's).",
        ),
    ] = None,
    note: Annotated[str | None, typer.Option(help="Who holds it, why (kept with it).")] = None,
) -> None:
    """Register a public key; replicas signing with it may start, and verify accepts it."""
    from gateway.audit.keyring import KeyRegistryError, register_key
    from gateway.cli.trail import public_key

    settings = load_settings()
    key = public_key(settings, public_key_arg)
    try:
        with open_database(settings) as session:
            registered = register_key(session, key, note=note)
    except KeyRegistryError as exc:
        raise typer.BadParameter(str(exc), param_hint="--public-key") from None
    typer.echo(f"registered {registered.key_id} ({registered.status})")


@keys_app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
) -> None:
    """Every registered key: id, status, when registered, when retired, note."""
    from gateway.audit.keyring import list_keys

    settings = load_settings()
    with open_database(settings) as session:
        keys = list_keys(session)
    if as_json:
        typer.echo(json.dumps([k.to_json() for k in keys], indent=2))
        return
    if not keys:
        typer.echo("no key registered yet (the first start registers its own)")
    for k in keys:
        retired = (
            f"  retired {k.retired_at:%Y-%m-%d %H:%M} at size {k.retired_at_seq}"
            if k.retired_at
            else ""
        )
        registered = f"{k.registered_at:%Y-%m-%d %H:%M}" if k.registered_at else "?"
        typer.echo(
            f"{k.key_id}  {k.status:<7}  registered {registered}{retired}  {k.public_key}"
            + (f"  ({k.note})" if k.note else "")
        )


@keys_app.command("retire")
def retire(
    key_id: Annotated[str, typer.Argument(help="The key id (`gateway audit keys list`).")],
) -> None:
    """Retire a key: its checkpoints so far still verify; replicas using it no longer start,
    and a checkpoint it signs from now on is refused."""
    from gateway.audit.keyring import KeyRegistryError, retire_key

    settings = load_settings()
    try:
        with open_database(settings) as session:
            retired = retire_key(session, key_id)
    except KeyRegistryError as exc:
        raise typer.BadParameter(str(exc), param_hint="KEY_ID") from None
    typer.echo(f"retired {retired.key_id} at trail size {retired.retired_at_seq}")
