"""`gateway models`."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli.common import load_settings

models_app = typer.Typer(help="Inspect, hash and verify registered models.", no_args_is_help=True)


@models_app.command("list")
def models_list() -> None:
    """List registered models, their licence and whether their weights are in place."""
    from gateway.generation.loader import ModelUnavailable, check_weights
    from gateway.policy.bundle import load_bundle

    settings = load_settings()
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

    settings = load_settings()
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

    settings = load_settings()
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
