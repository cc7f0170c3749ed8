"""`gateway serve` and `gateway moderate`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.common import key_pepper, load_settings


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
    settings = load_settings()
    settings = settings.model_copy(
        update={"host": host or settings.host, "port": port or settings.port}
    )
    typer.echo(f"data directory: {settings.data_dir.resolve()}")
    runtime = build_runtime(settings)
    if runtime.recovered:
        typer.echo(f"closed {len(runtime.recovered)} decision(s) left open as aborted")
    if settings.bootstrap_admin:
        key = bootstrap_admin_key(runtime.sessions, settings.data_dir, key_pepper(settings))
        if key:
            typer.echo(
                "first start: created an admin API key (shown once; also saved to "
                f"{settings.data_dir / KEY_FILE}, mode 0600):"
            )
            typer.echo(f"  {key}")
    for stage, artefacts in runtime.policy.current().stages.items():
        if not artefacts.available:
            typer.echo(f"{stage} is unavailable (not ready, /readyz 503): {artefacts.reason}")
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
    from gateway.runtime import build_prompt_classifier, load_models

    settings = load_settings()
    bundle = load_bundle(settings.policy_dir)
    models = load_models(settings.model_copy(update={"nsfw_detector": False}))
    if models.problems:  # no weaker classifier: without every artefact nothing is moderated
        for name, why in sorted(models.problems.items()):
            typer.echo(f"safety artefact {name} is unavailable: {why}", err=True)
        raise typer.Exit(1)
    classifier = build_prompt_classifier(bundle, models.encoder, models.head)
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
