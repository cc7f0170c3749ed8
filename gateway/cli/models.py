"""`gateway models`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gateway.cli.common import audit_log, load_settings, open_database

if TYPE_CHECKING:
    from gateway.policy.bundle import PolicyBundle
    from gateway.settings import Settings

models_app = typer.Typer(help="List, add, hash and verify registered models.", no_args_is_help=True)


@models_app.command("list")
def models_list() -> None:
    """What is registered (in the version in force, or only in a pending draft), installed,
    pinned and approved."""
    from gateway.generation.registry_view import model_rows

    settings = load_settings()
    with open_database(settings) as session:
        rows = model_rows(session, settings)
    for r in rows:
        typer.echo(
            f"{r.model_id}  [{r.licence}]  registered: {r.registered}  installed: {r.installed}"
            f"  pinned: {r.pinned}  approved: {r.approved}"
        )


@models_app.command("add")
def models_add(
    model_id: Annotated[str, typer.Argument(metavar="ID", help="Model id, e.g. acme/sd15-ft.")],
    path: Annotated[
        Path, typer.Option(help="Diffusers pipeline folder, or a single .safetensors file.")
    ],
    licence: Annotated[str, typer.Option(help="Licence id from licences.yaml.")],
    pipeline_class: Annotated[
        str | None,
        typer.Option(help="diffusers class (checked; needed for a single-file checkpoint)."),
    ] = None,
    sizes: Annotated[
        str | None, typer.Option(help="Allowed sizes, e.g. 512x512,768x512 (default: native).")
    ] = None,
    steps: Annotated[
        str | None, typer.Option(help="MIN:MAX:DEFAULT denoising steps (default 1:100:30).")
    ] = None,
    author: Annotated[str, typer.Option(help="Who proposes it (recorded as cli:<author>).")] = (
        "operator"
    ),
    note: Annotated[str | None, typer.Option(help="Why; shown to the reviewers.")] = None,
) -> None:
    """Check a model folder loads, pin its weights and open a policy DRAFT registering it.

    Prints the draft id on the last line. Nothing is served until legal submits the draft
    and a second person approves it (docs/operators.md, section 4).
    """
    import yaml

    from gateway.generation.onboard import (
        OnboardError,
        parse_sizes,
        parse_steps,
        prepare_entry,
        with_model,
    )
    from gateway.policy.bundle import PolicyError, parse_bundle
    from gateway.policy.store import active_ref, decode_files, get_row
    from gateway.policy.workflow import record_draft

    settings = load_settings()
    with open_database(settings) as session:
        ref = active_ref(session)
        if ref is None:
            typer.echo("no policy version is in force yet: start `gateway serve` once", err=True)
            raise typer.Exit(1)
        files = decode_files(get_row(session, ref.id).files)
    current = (yaml.safe_load(files["models.yaml"]) or {}).get("models", {})
    try:
        prepared = prepare_entry(
            model_id,
            path,
            settings.resolved_model_dir,
            licence=licence,
            pipeline_class=pipeline_class,
            sizes=parse_sizes(sizes) if sizes is not None else None,
            steps=parse_steps(steps) if steps is not None else None,
            existing=current.get(model_id),
        )
        text = with_model(files["models.yaml"], model_id, prepared.entry)
    except OnboardError as exc:
        typer.echo(f"error: {exc.param}: {exc}", err=True)
        raise typer.Exit(2) from None
    draft_files = {**files, "models.yaml": text}
    try:
        parse_bundle(draft_files)
    except PolicyError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(1) from None
    pins = prepared.entry["pins"]
    with open_database(settings) as session:
        row = record_draft(
            session,
            audit_log(settings),
            draft_files,
            by=f"cli:{author}",
            note=note or f"register {model_id} ({licence}) with {len(pins)} pinned weight files",
            source="cli models add",
        )
        draft_id = row.id
    verb = "replaces" if model_id in current else "adds"
    typer.echo(
        f"{model_id} loads as {prepared.pipeline_class}; {len(pins)} weight files pinned "
        f"(weights {prepared.weights_sha256[:12]})"
    )
    typer.echo(
        f"draft {draft_id} {verb} it in models.yaml, on policy version {ref.id}; legal submits "
        "it and a second person approves it before it is served"
    )
    typer.echo(str(draft_id))


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
