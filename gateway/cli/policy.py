"""`gateway policy` and `gateway db`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.cli.common import load_settings, open_database, parse_facts
from gateway.domain import INTENDED_USES

policy_app = typer.Typer(
    help="Validate, test and evaluate the policy bundle.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@policy_app.command("validate")
def policy_validate(
    directory: Annotated[Path | None, typer.Argument(help="Bundle folder.")] = None,
) -> None:
    """Validate a policy bundle; errors name file, line and field."""
    from gateway.policy.bundle import PolicyError, load_bundle

    folder = directory or load_settings().policy_dir
    try:
        bundle = load_bundle(folder)
    except PolicyError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps({"valid": True, "version": bundle.version}))


@policy_app.command("test")
def policy_test(
    directory: Annotated[Path | None, typer.Argument(help="Bundle folder.")] = None,
) -> None:
    """Run the bundle's policy tests (tests/*_test.yaml); exit 1 if any fails."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from gateway.policy.bundle import PolicyError, load_bundle
    from gateway.policy.policy_tests import run_policy_tests

    try:
        results = run_policy_tests(load_bundle(directory or load_settings().policy_dir))
    except PolicyError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(2) from None
    table = Table(title="policy tests")
    for column in ("result", "file", "case", "decision", "why"):
        table.add_column(column)
    for r in results:
        table.add_row(  # names may hold [brackets]: escape rich markup
            "[green]PASS[/]" if r.passed else "[red]FAIL[/]",
            escape(r.file),
            escape(r.name),
            r.decision,
            escape("; ".join(r.failures)),
        )
    Console(width=200).print(table)
    failed = sum(not r.passed for r in results)
    typer.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed or not results:
        raise typer.Exit(1)


@policy_app.command("evaluate")
def policy_evaluate(
    model: Annotated[str, typer.Option(help="Registered model id.")],
    use: Annotated[str, typer.Option(help=f"Intended use: {', '.join(INTENDED_USES)}.")],
    tenant: Annotated[str | None, typer.Option(help="Tenant whose facts apply.")] = None,
    fact: Annotated[
        list[str] | None,
        typer.Option("--fact", help="key=value, added to (or instead of) the tenant's facts."),
    ] = None,
) -> None:
    """Evaluate a model's licence for an intended use and a tenant (same code as requests)."""
    from gateway.auth.tenants import TenantNotFound, get_tenant
    from gateway.policy.bundle import load_bundle
    from gateway.policy.evaluate import evaluate_model

    settings = load_settings()
    bundle = load_bundle(settings.policy_dir)
    if model not in bundle.models.models:
        raise typer.BadParameter(f"{model} is not registered", param_hint="--model")
    if use not in INTENDED_USES:
        raise typer.BadParameter(
            f"unknown use; one of {', '.join(INTENDED_USES)}", param_hint="--use"
        )
    facts: dict[str, Any] = {}
    if tenant:
        try:
            with open_database(settings) as session:
                facts = dict(get_tenant(session, tenant).facts or {})
        except TenantNotFound:
            raise typer.BadParameter(f"no tenant {tenant!r}", param_hint="--tenant") from None
    facts.update(parse_facts(fact))
    verdict = evaluate_model(bundle, model, use, facts)
    typer.echo(json.dumps({**verdict.to_json(), "policy_version": bundle.version}, indent=2))
    if verdict.decision != "allow":
        raise typer.Exit(3)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations."""
    from gateway.db.migrate import upgrade

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url, settings.migrations_dir)
    typer.echo("database is at the latest schema")
