"""`gateway provenance verify FILE`: the verify endpoint's answer, from the command line.

Run by an operator with the database at hand, so the decision is always shown. Exit status:
0 when this gateway issued the image, 1 when it did not, 2 when the file is not an image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.common import load_settings, open_database

provenance_app = typer.Typer(help="Provenance of images: C2PA manifests and watermarks.")


@provenance_app.command("verify")
def verify_file(
    file: Annotated[Path, typer.Argument(help="Image file.", exists=True, dir_okay=False)],
) -> None:
    """Read the C2PA manifest and the watermark; name the decision that made the image."""
    from gateway.errors import GatewayError
    from gateway.pipeline.image_input import ImageLimits, read_image
    from gateway.provenance.stamp import ProvenanceService
    from gateway.provenance.verify import find_decision, inspect, verification_json

    settings = load_settings()
    try:
        decoded = read_image(file.read_bytes(), "FILE", ImageLimits.from_settings(settings))
    except GatewayError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    service = ProvenanceService.from_settings(settings)
    found = inspect(service, decoded.raw, decoded.mime, decoded.image)
    with open_database(settings) as session:
        decision = find_decision(session, found)
        answer = verification_json(found, decision, visible=True)
    typer.echo(json.dumps(answer, indent=2, sort_keys=True))
    raise typer.Exit(0 if decision is not None else 1)
