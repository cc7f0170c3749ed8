"""`gateway serve` and `gateway moderate`."""

from __future__ import annotations

import logging
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gateway.cli.common import key_pepper, load_settings

if TYPE_CHECKING:
    from gateway.settings import Settings

log = logging.getLogger("gateway.startup")


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Start the gateway: migrate, load policy and models, then serve HTTP.

    Logs go to stderr as JSON lines or text (GATEWAY_LOG_FORMAT); see docs/operators.md.
    """
    from gateway.observability.logs import configure_logging, resolve_format

    settings = load_settings()
    settings = settings.model_copy(
        update={"host": host or settings.host, "port": port or settings.port}
    )
    fmt = resolve_format(settings.log_format)
    capture = configure_logging(fmt, settings.log_level)
    try:
        _serve(settings, terminal=fmt == "text" and sys.stderr.isatty())
    except Exception:
        log.critical("the gateway could not start", exc_info=True, extra={"full_exception": True})
        raise typer.Exit(1) from None
    finally:
        if capture is not None:
            capture.close()


def _serve(settings: Settings, *, terminal: bool) -> None:
    import uvicorn

    from gateway.app import create_app
    from gateway.auth.bootstrap import KEY_FILE, bootstrap_admin_key
    from gateway.db.migrate import upgrade
    from gateway.observability.access import AccessLog
    from gateway.observability.startup import Startup
    from gateway.runtime import build_runtime, load_models

    startup = Startup(terminal=terminal)
    log.info("data directory: %s", settings.data_dir.resolve())
    with startup.step("migrating the database"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.resolved_database_url, settings.migrations_dir)
    with startup.step("loading the prompt encoder and image checkers"):
        models = load_models(settings)
    with startup.step("loading the policy in force and the generation models"):
        runtime = build_runtime(settings, models)
    if runtime.recovered:
        log.warning("closed %d decision(s) left open as aborted", len(runtime.recovered))
    key_line = "admin key: none created (an admin key exists, or GATEWAY_BOOTSTRAP_ADMIN=false)"
    if settings.bootstrap_admin:
        key = bootstrap_admin_key(runtime.sessions, settings.data_dir, key_pepper(settings))
        key_file = (settings.data_dir / KEY_FILE).resolve()
        if key:
            log.info("first start: created an admin API key, saved to %s (mode 0600)", key_file)
            key_line = f"admin key: {key_file} (first start; mode 0600)"
            if terminal:  # an operator is watching: show it once, never in a log
                typer.echo(f"  admin key (shown once): {key}", err=True)
        elif key_file.exists():
            key_line = f"admin key: {key_file}"
    stages_down = [
        f"{stage} ({artefacts.reason})"
        for stage, artefacts in runtime.policy.current().stages.items()
        if not artefacts.available
    ]
    for down in stages_down:
        log.error("safety stage unavailable, so not ready (/readyz 503): %s", down)
    manager = runtime.models
    ready = [m for m in manager.entries if manager.status(m).available]
    unavailable = manager.unavailable()
    summary = [
        f"listening on http://{settings.host}:{settings.port}",
        f"policy version {runtime.policy.current().version_id} ({runtime.bundle.version[:12]})",
        f"models: {len(ready)} ready ({', '.join(ready) or 'none'}), {len(unavailable)} "
        "unavailable (`gateway models list` says why)",
        "safety stages: "
        + ("UNAVAILABLE: " + "; ".join(stages_down) if stages_down else "all ready"),
        key_line,
    ]

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if not self.should_exit:
                startup.summary(summary)

    config = uvicorn.Config(
        AccessLog(create_app(settings, runtime)),
        host=settings.host,
        port=settings.port,
        log_config=None,  # our handler (configure_logging) formats uvicorn's lines too
        access_log=False,  # AccessLog logs requests without query strings
    )
    # uvicorn re-raises SIGTERM after its graceful shutdown; exit through the finally below
    # (close the runtime, say so) instead of dying in the default handler
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        Server(config).run()
    finally:
        runtime.close()
        log.info("stopped")


def moderate(
    input_csv: Annotated[
        Path, typer.Argument(help="CSV file with a header row.", exists=True, dir_okay=False)
    ],
    column: Annotated[str, typer.Option(help="Column holding the text.")] = "prompt",
    output: Annotated[Path | None, typer.Option(help="JSON Lines file (default: stdout).")] = None,
) -> None:
    """Moderate every row of a CSV column: one JSON object per row, in input order."""

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
