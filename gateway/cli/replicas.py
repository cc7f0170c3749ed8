"""`gateway replicas secrets | reset-secret`: the secrets every replica must share.

See :mod:`gateway.shared_secrets` and docs/operators.md, "Several replicas".
"""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli.common import load_settings, open_database

replicas_app = typer.Typer(
    help="Secrets every replica must share (console cookie key, watermark key, C2PA "
    "certificate), pinned by fingerprint.",
    no_args_is_help=True,
)


@replicas_app.command("secrets")
def secrets() -> None:
    """The pinned fingerprints: which replica recorded each, and when."""
    from gateway.shared_secrets import list_pinned

    settings = load_settings()
    with open_database(settings) as session:
        pinned = list_pinned(session)
    if not pinned:
        typer.echo("nothing pinned yet (the first replica to start pins its secrets)")
    for p in pinned:
        typer.echo(
            f"{p.name:<17} {p.fingerprint[:16]}…  by {p.instance_id} "
            f"at {p.recorded_at:%Y-%m-%d %H:%M}"
        )


@replicas_app.command("reset-secret")
def reset_secret(
    name: Annotated[str, typer.Argument(help="console_secret, watermark_key or c2pa_certificate.")],
) -> None:
    """Forget one pinned fingerprint, to rotate that secret: the next replica to start pins
    its own, and every replica holding another then refuses to start."""
    from gateway.shared_secrets import SETTING, reset_pinned

    if name not in SETTING:
        raise typer.BadParameter(f"one of {', '.join(SETTING)}", param_hint="NAME")
    settings = load_settings()
    with open_database(settings) as session:
        forgot = reset_pinned(session, name)
    typer.echo(f"forgot the pinned {name}" if forgot else f"{name} was not pinned")
