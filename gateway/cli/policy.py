"""`gateway policy` and `gateway db`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway.cli.common import audit_log, load_settings, open_database, parse_facts
from gateway.domain import INTENDED_USES

if TYPE_CHECKING:
    from gateway.policy.bundle import PolicyBundle, PolicyError

policy_app = typer.Typer(
    help="Validate, test and evaluate policy bundles; move versions between folders and the "
    "database.",
    no_args_is_help=True,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


def _print_issues(exc: PolicyError) -> None:
    for issue in exc.issues:
        typer.echo(str(issue), err=True)


def _load_or_exit(folder: Path, *, code: int) -> PolicyBundle:
    """The bundle in ``folder``; else its errors (file, line, field) and exit ``code``."""
    from gateway.policy.bundle import PolicyError, load_bundle

    try:
        return load_bundle(folder)
    except PolicyError as exc:
        _print_issues(exc)
        raise typer.Exit(code) from None


@policy_app.command("validate")
def policy_validate(
    directory: Annotated[Path | None, typer.Argument(help="Bundle folder.")] = None,
) -> None:
    """Validate a policy bundle; errors name file, line and field."""
    bundle = _load_or_exit(directory or load_settings().policy_dir, code=1)
    typer.echo(json.dumps({"valid": True, "version": bundle.version}))


@policy_app.command("test")
def policy_test(
    directory: Annotated[Path | None, typer.Argument(help="Bundle folder.")] = None,
    content: Annotated[
        bool,
        typer.Option(
            "--content/--licence-only",
            help="Also run the content cases through the prompt classifier (loads it).",
        ),
    ] = False,
) -> None:
    """Run the bundle's policy tests (tests/*_test.yaml); exit 1 if any fails."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from gateway.policy.bundle import PolicyError
    from gateway.policy.policy_tests import run_policy_tests

    bundle = _load_or_exit(directory or load_settings().policy_dir, code=2)
    try:
        results = run_policy_tests(bundle)
        if content:
            from gateway.policy.content_tests import run_content_tests
            from gateway.safety.loader import build_prompt_stage, load_models

            classifier, _ = build_prompt_stage(bundle, load_models(load_settings()))
            results += run_content_tests(bundle, classifier)
    except PolicyError as exc:  # a test file that does not parse
        _print_issues(exc)
        raise typer.Exit(2) from None
    table = Table(title="policy tests")
    for column in ("result", "kind", "file", "case", "decision", "why"):
        table.add_column(column)
    for r in results:
        table.add_row(  # names may hold [brackets]: escape rich markup
            "[green]PASS[/]" if r.passed else "[red]FAIL[/]",
            r.kind,
            escape(r.file) + (f":{r.line}" if r.line else ""),
            escape(r.name),
            r.decision,
            escape("; ".join(r.failures)),
        )
    Console(width=200).print(table)
    failed = sum(not r.passed for r in results)
    typer.echo(f"{len(results) - failed} passed, {failed} failed")
    if not content:
        typer.echo("content cases not run: pass --content to run them through the classifier")
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


@policy_app.command("import")
def policy_import(
    directory: Annotated[Path, typer.Argument(help="Bundle folder to propose.")],
    author: Annotated[
        str, typer.Option(help="Who proposes it (recorded as cli:<author>).")
    ] = "operator",
    note: Annotated[str | None, typer.Option(help="What changes and why.")] = None,
) -> None:
    """Import a bundle folder as a new DRAFT; it still needs review and a second approver."""
    from gateway.policy.store import DRAFT
    from gateway.policy.workflow import record_draft

    bundle = _load_or_exit(directory, code=1)
    settings = load_settings()
    with open_database(settings) as session:
        row = record_draft(
            session,
            audit_log(settings),
            bundle.files,
            by=f"cli:{author}",
            note=note or f"imported from {directory}",
            source="cli",
        )
        out = {"draft_id": row.id, "status": DRAFT, "sha256": row.sha256}
    typer.echo(json.dumps(out))


@policy_app.command("export")
def policy_export(
    version: Annotated[int, typer.Argument(help="Policy version id.")],
    directory: Annotated[Path, typer.Argument(help="Folder to write the bundle into.")],
) -> None:
    """Write a stored policy version's files to a folder (e.g. to review or re-import)."""
    from gateway.errors import GatewayError
    from gateway.policy.store import decode_files, get_row, write_files

    with open_database(load_settings()) as session:
        try:
            row = get_row(session, version)
        except GatewayError as exc:
            raise typer.BadParameter(exc.message, param_hint="VERSION") from None
        files, sha, status = decode_files(row.files), row.sha256, row.status
    if directory.exists() and any(directory.iterdir()):
        raise typer.BadParameter(f"{directory} is not empty", param_hint="DIRECTORY")
    write_files(directory, files)
    typer.echo(
        json.dumps({"version": version, "status": status, "sha256": sha, "files": len(files)})
    )


@policy_app.command("versions")
def policy_versions() -> None:
    """List the stored policy versions, newest first."""
    from rich.console import Console
    from rich.table import Table

    from gateway.policy.store import list_rows, version_json

    with open_database(load_settings()) as session:
        rows = [version_json(r) for r in list_rows(session)]
    table = Table(title="policy versions")
    for column in ("id", "state", "sha256", "authors", "approved by", "effective at", "note"):
        table.add_column(column)
    for v in rows:
        table.add_row(
            str(v["id"]),
            v["state"],
            v["sha256"][:12],
            ", ".join(v["authors"]),
            v["approved_by"] or "",
            v["effective_at"] or "",
            (v["note"] or "")[:60],
        )
    Console(width=200).print(table)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations."""
    from gateway.db.migrate import upgrade

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url, settings.migrations_dir)
    typer.echo("database is at the latest schema")
