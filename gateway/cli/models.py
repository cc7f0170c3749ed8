"""`gateway models`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from gateway.cli.common import load_settings

if TYPE_CHECKING:
    from gateway.policy.bundle import PolicyBundle
    from gateway.settings import Settings

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
    """Load models through the real loader and check pins; exit 1 if any fails.

    Also loads the image checkers: open_nsfw (bundled) and, when GATEWAY_CLIP_DIR is set, the
    open_clip concept checker with the policy's concepts, each run once on a test image.
    """
    from gateway.generation.loader import ModelUnavailable, load_model
    from gateway.policy.bundle import load_bundle

    settings = load_settings()
    bundle = load_bundle(settings.policy_dir)
    failed = False if model_id else not _verify_image_checkers(settings, bundle)
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


def _verify_image_checkers(settings: Settings, bundle: PolicyBundle) -> bool:
    from PIL import Image

    from gateway.safety.loader import build_image_classifier, load_nsfw

    probe = [Image.new("RGB", (64, 64), (128, 128, 128))]
    try:
        nsfw = load_nsfw() if settings.nsfw_detector else None
        classifier = build_image_classifier(settings, bundle, nsfw)
        scores = classifier.classify(probe)[0]
    except (OSError, ValueError, RuntimeError) as exc:
        typer.echo(f"FAIL  image checkers  {type(exc).__name__}: {exc}")
        return False
    names = ", ".join(sorted(scores.detectors))
    concepts = len(bundle.content.image.concepts) if settings.clip_dir else 0
    clip = (
        f"; concept checker from {settings.clip_dir} with {concepts} concepts" if concepts else ""
    )
    typer.echo(f"ok    image checkers  {names}{clip}")
    return True
