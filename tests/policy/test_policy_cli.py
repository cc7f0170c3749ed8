"""`gateway policy import / export / versions` against a real database."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from gateway.cli import app
from gateway.db.engine import unit_of_work
from gateway.db.models import AuditEvent
from gateway.policy.bundle import load_bundle
from gateway.runtime import Runtime
from gateway.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def _env(settings: Settings) -> dict[str, str]:
    return {
        "GATEWAY_DATA_DIR": str(settings.data_dir),
        "GATEWAY_DATABASE_URL": settings.resolved_database_url,
        "GATEWAY_MODEL_DIR": str(settings.model_dir),
        "GATEWAY_POLICY_DIR": str(settings.policy_dir),
    }


def test_export_import_round_trip_creates_a_draft(
    runtime_factory: Callable[..., Runtime], tmp_path: Path
) -> None:
    runtime = runtime_factory()
    env = _env(runtime.settings)
    out = tmp_path / "v1"
    result = CliRunner().invoke(app, ["policy", "export", "1", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sha256"] == runtime.bundle.version
    assert load_bundle(out).version == runtime.bundle.version

    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    content = edited / "content.yaml"
    content.write_text(content.read_text().replace("terms: [gore,", "terms: [carnage, gore,"))
    result = CliRunner().invoke(
        app, ["policy", "import", str(edited), "--author", "maria", "--note", "carnage"], env=env
    )
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    assert made["status"] == "draft" and made["sha256"] == load_bundle(edited).version
    with unit_of_work(runtime.sessions) as session:
        event = session.query(AuditEvent).order_by(AuditEvent.seq.desc()).first()
        assert event is not None and event.kind == "policy.draft_created"
        assert '"by":"cli:maria"' in event.payload
    # importing does not publish: the version in force is unchanged
    assert runtime.policy.refresh() is False
    listing = CliRunner().invoke(app, ["policy", "versions"], env=env)
    assert listing.exit_code == 0 and "draft" in listing.output and "published" in listing.output

    assert (
        CliRunner().invoke(app, ["policy", "export", "99", str(tmp_path / "x")], env=env).exit_code
        == 2
    )
    assert CliRunner().invoke(app, ["policy", "export", "1", str(out)], env=env).exit_code == 2


def test_import_refuses_an_invalid_bundle(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(REPO / "policies", broken)
    (broken / "uses.yaml").write_text("default: 12\n")
    result = CliRunner().invoke(
        app, ["policy", "import", str(broken)], env=_env(settings_factory())
    )
    assert result.exit_code == 1
    assert "uses.yaml" in result.output
