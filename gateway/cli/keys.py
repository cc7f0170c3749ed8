"""`gateway keys` and `gateway tenants`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gateway.cli.common import audit_log, key_pepper, load_settings, open_database, parse_facts
from gateway.domain import INTENDED_USES, Role

keys_app = typer.Typer(help="Create and revoke API keys.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants and the facts licences depend on.", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name (created if it does not exist).")],
    role: Annotated[list[Role], typer.Option(help="Role; repeat for several.")],
    label: Annotated[str | None, typer.Option(help="A note to recognise the key by.")] = None,
    default_use: Annotated[
        str | None,
        typer.Option(help=f"Intended use when a request names none ({', '.join(INTENDED_USES)})."),
    ] = None,
    allow_use: Annotated[
        list[str] | None,
        typer.Option(help="An intended use this key may declare; repeat. Default: any."),
    ] = None,
) -> None:
    """Create an API key. The key is printed once, as the last line of output."""
    from gateway.auth.keys import create_key

    settings = load_settings()
    try:
        with open_database(settings) as session:
            created = create_key(
                session,
                tenant=tenant,
                roles=role,
                pepper=key_pepper(settings),
                label=label,
                default_intended_use=default_use,
                allowed_uses=allow_use,
            )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(
        f"created key {created.key_id} for tenant {tenant} "
        f"with roles {', '.join(sorted(r.value for r in role))}",
        err=True,
    )
    typer.echo(created.secret)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (the part after gk_, before _).")],
) -> None:
    """Revoke a key at once: its next API or console request is refused."""
    from gateway.auth.keys import revoke_key

    settings = load_settings()
    log = audit_log(settings)
    with open_database(settings) as session:
        revoked = revoke_key(session, key_id)
        if revoked is None:
            raise typer.BadParameter(f"no API key {key_id!r}", param_hint="KEY_ID")
        log.append(session, "key.revoked", {"key_id": key_id, "by": "cli"})
    typer.echo(json.dumps({"id": key_id, "revoked": True, "revoked_at": revoked.isoformat()}))


FactOption = Annotated[
    list[str] | None,
    typer.Option("--fact", help="key=value, e.g. annual_revenue_usd=250000; repeat."),
]


@tenants_app.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="Tenant name.")], fact: FactOption = None
) -> None:
    """Create a tenant with facts."""
    from gateway.auth.tenants import TenantExists, create_tenant, tenant_json

    facts = parse_facts(fact)
    try:
        with open_database(load_settings()) as session:
            typer.echo(json.dumps(tenant_json(create_tenant(session, name, facts))))
    except TenantExists:
        raise typer.BadParameter(f"tenant {name!r} exists; use `tenants set`") from None


@tenants_app.command("set")
def tenants_set(
    name: Annotated[str, typer.Argument(help="Tenant name.")],
    fact: FactOption = None,
    unset: Annotated[list[str] | None, typer.Option(help="Fact to remove; repeat.")] = None,
) -> None:
    """Set or remove facts of a tenant."""
    from gateway.auth.tenants import TenantNotFound, set_facts, tenant_json

    facts = parse_facts(fact)
    try:
        with open_database(load_settings()) as session:
            typer.echo(json.dumps(tenant_json(set_facts(session, name, facts, unset))))
    except TenantNotFound:
        raise typer.BadParameter(f"no tenant {name!r}") from None


@tenants_app.command("list")
def tenants_list() -> None:
    """List tenants and their facts."""
    from gateway.auth.tenants import list_tenants, tenant_json

    with open_database(load_settings()) as session:
        for tenant in list_tenants(session):
            typer.echo(json.dumps(tenant_json(tenant)))
