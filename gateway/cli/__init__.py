"""The ``gateway`` command: serve, moderate, keys, tenants, models, policy, db, audit,
provenance, replicas."""

from __future__ import annotations

import typer

from gateway.cli.audit import audit_app
from gateway.cli.audit_keys import keys_app as audit_keys_app  # noqa: F401  (audit keys)
from gateway.cli.bundle import verify_bundle  # noqa: F401  (registers audit verify-bundle)
from gateway.cli.finetune import finetune_app
from gateway.cli.keys import keys_app, tenants_app
from gateway.cli.models import models_app
from gateway.cli.policy import db_app, policy_app
from gateway.cli.provenance import provenance_app
from gateway.cli.replicas import replicas_app
from gateway.cli.serve import moderate, serve
from gateway.cli.trail import checkpoint, erase, verify

app = typer.Typer(
    help="Governed text-to-image gateway.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.command()(serve)
app.command()(moderate)
app.add_typer(keys_app, name="keys")
app.add_typer(tenants_app, name="tenants")
app.add_typer(models_app, name="models")
app.add_typer(finetune_app, name="finetune")
app.add_typer(policy_app, name="policy")
app.add_typer(db_app, name="db")
app.add_typer(provenance_app, name="provenance")
app.add_typer(replicas_app, name="replicas")
app.add_typer(audit_app, name="audit")  # export, and (from trail) verify, checkpoint, erase

__all__ = ["app", "checkpoint", "erase", "main", "verify"]


def main() -> None:
    app()
