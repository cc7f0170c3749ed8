"""`gateway audit verify-bundle`: check a signed export bundle offline (no database)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.audit import audit_app


@audit_app.command("verify-bundle")
def verify_bundle(
    bundle: Annotated[Path, typer.Argument(help="The zip written by `export --bundle`.")],
    expect_key: Annotated[
        str | None,
        typer.Option(help="Public key (file or base64) the checkpoint must be signed with."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a bundle's manifest, signature, proofs and records; exit 1 naming the failure."""
    from gateway.audit.bundle import verify_bundle as check

    key = None
    if expect_key:
        path = Path(expect_key)
        key = path.read_text(encoding="ascii").strip() if path.is_file() else expect_key.strip()
    report = check(bundle, expect_key=key)
    typer.echo(
        json.dumps({**asdict(report), "summary": report.summary}) if as_json else report.summary
    )
    if not report.ok:
        raise typer.Exit(1)
