"""The ``gateway`` command: serve, keys, models, policy, db."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from gateway.domain import INTENDED_USES, Role
from gateway.settings import Settings

app = typer.Typer(
    help="Governed text-to-image gateway.", no_args_is_help=True, pretty_exceptions_enable=False
)
keys_app = typer.Typer(help="Create API keys.", no_args_is_help=True)
models_app = typer.Typer(help="Inspect, hash and verify registered models.", no_args_is_help=True)
policy_app = typer.Typer(help="Validate the policy bundle.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
app.add_typer(policy_app, name="policy")
app.add_typer(db_app, name="db")


def _settings() -> Settings:
    return Settings()


def _pepper(settings: Settings) -> str:
    return settings.key_pepper.get_secret_value() if settings.key_pepper else ""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Start the gateway: migrate, load policy and models, then serve HTTP."""
    import uvicorn

    from gateway.app import create_app
    from gateway.auth.bootstrap import KEY_FILE, bootstrap_admin_key
    from gateway.runtime import build_runtime

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = _settings()
    settings = settings.model_copy(
        update={"host": host or settings.host, "port": port or settings.port}
    )
    typer.echo(f"data directory: {settings.data_dir.resolve()}")
    runtime = build_runtime(settings)
    if runtime.recovered:
        typer.echo(f"closed {len(runtime.recovered)} decision(s) left open as aborted")
    if settings.bootstrap_admin:
        key = bootstrap_admin_key(runtime.sessions, settings.data_dir, _pepper(settings))
        if key:
            typer.echo(
                "first start: created an admin API key (shown once; also saved to "
                f"{settings.data_dir / KEY_FILE}, mode 0600):"
            )
            typer.echo(f"  {key}")
    typer.echo(
        f"policy version {runtime.bundle.version[:12]}; models ready: "
        + ", ".join(m for m in runtime.models.entries if runtime.models.status(m).available)
    )
    typer.echo(f"listening on http://{settings.host}:{settings.port}")
    try:
        uvicorn.run(
            create_app(settings, runtime), host=settings.host, port=settings.port, log_level="info"
        )
    finally:
        runtime.close()


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
    from gateway.db.engine import make_engine, make_session_factory, unit_of_work
    from gateway.db.migrate import upgrade

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url, settings.migrations_dir)
    engine = make_engine(settings.resolved_database_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            created = create_key(
                session,
                tenant=tenant,
                roles=role,
                pepper=_pepper(settings),
                label=label,
                default_intended_use=default_use,
                allowed_uses=allow_use,
            )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    finally:
        engine.dispose()
    typer.echo(
        f"created key {created.key_id} for tenant {tenant} "
        f"with roles {', '.join(sorted(r.value for r in role))}",
        err=True,
    )
    typer.echo(created.secret)


@app.command()
def moderate(
    input_csv: Annotated[
        Path, typer.Argument(help="CSV file with a header row.", exists=True, dir_okay=False)
    ],
    column: Annotated[str, typer.Option(help="Column holding the text.")] = "prompt",
    output: Annotated[Path | None, typer.Option(help="JSON Lines file (default: stdout).")] = None,
) -> None:
    """Moderate every row of a CSV column: one JSON object per row, in input order."""
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from gateway.moderate_file import moderate_csv
    from gateway.policy.bundle import load_bundle
    from gateway.runtime import build_prompt_classifier
    from gateway.safety.text_encoder import MiniLMEncoder

    settings = _settings()
    bundle = load_bundle(settings.policy_dir)
    classifier = build_prompt_classifier(bundle, MiniLMEncoder(settings.prompt_encoder_dir))
    with input_csv.open(newline="", encoding="utf-8") as fh:
        total = max(sum(1 for _ in fh) - 1, 0)  # rows, roughly (quoted newlines count twice)
    out = output.open("w", encoding="utf-8") if output else sys.stdout
    progress = Progress(
        TextColumn("moderating"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        disable=not sys.stderr.isatty(),
        transient=False,
        console=Console(stderr=True),
    )
    try:
        with progress:
            task = progress.add_task("rows", total=total)
            count = moderate_csv(
                input_csv,
                column,
                out,
                classifier,
                bundle.content,
                progress=lambda n: progress.advance(task, n),
            )
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="--column") from None
    finally:
        if output:
            out.close()
    typer.echo(f"moderated {count} rows", err=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations."""
    from gateway.db.migrate import upgrade

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url, settings.migrations_dir)
    typer.echo("database is at the latest schema")


@models_app.command("list")
def models_list() -> None:
    """List registered models, their licence and whether their weights are in place."""
    from gateway.generation.loader import ModelUnavailable, check_weights
    from gateway.policy.bundle import load_bundle

    settings = _settings()
    bundle = load_bundle(settings.policy_dir)
    for model_id, entry in bundle.models.models.items():
        try:
            digest = check_weights(model_id, entry, settings.resolved_model_dir)
            state = f"ready (weights {digest[:12]})"
        except ModelUnavailable as exc:
            state = f"unavailable: {exc}"
        typer.echo(f"{model_id}  [{entry.licence}]  {state}")


@models_app.command("hash")
def models_hash(
    model_id: Annotated[str, typer.Argument(help="Registered model id.")],
) -> None:
    """Print the sha256 of every weight file, as a `pins:` block for models.yaml."""
    from gateway.generation.loader import source_path
    from gateway.generation.pins import hash_weight_files
    from gateway.policy.bundle import load_bundle

    settings = _settings()
    entry = load_bundle(settings.policy_dir).models.models.get(model_id)
    if entry is None:
        raise typer.BadParameter(f"{model_id} is not registered in models.yaml")
    path = source_path(entry, settings.resolved_model_dir)
    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist")
    typer.echo("pins:")
    for rel, digest in hash_weight_files(path).items():
        typer.echo(f"  {rel}: {digest}")


@models_app.command("verify")
def models_verify(
    model_id: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
) -> None:
    """Load models through the real loader and check pins; exit 1 if any fails."""
    from gateway.generation.loader import ModelUnavailable, load_model
    from gateway.policy.bundle import load_bundle

    settings = _settings()
    bundle = load_bundle(settings.policy_dir)
    failed = False
    for mid, entry in bundle.models.models.items():
        if model_id and mid != model_id:
            continue
        try:
            loaded = load_model(mid, entry, settings.resolved_model_dir)
            typer.echo(f"ok    {mid}  weights {loaded.weights_sha256}")
        except ModelUnavailable as exc:
            failed = True
            typer.echo(f"FAIL  {mid}  {exc}")
    if failed:
        raise typer.Exit(1)


@policy_app.command("validate")
def policy_validate(
    directory: Annotated[Path | None, typer.Argument(help="Bundle folder.")] = None,
) -> None:
    """Validate a policy bundle; errors name file, line and field."""
    from gateway.policy.bundle import PolicyError, load_bundle

    folder = directory or _settings().policy_dir
    try:
        bundle = load_bundle(folder)
    except PolicyError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps({"valid": True, "version": bundle.version}))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
