"""The `gateway` command line, run in-process with typer's runner on a real database."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.auth.keys import authenticate
from gateway.cli import app
from gateway.db.engine import make_engine, make_session_factory, unit_of_work
from gateway.domain import Role

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(tmp_path: Path, database_url: str, model_dir: Path) -> dict[str, str]:
    return {
        "GATEWAY_DATA_DIR": str(tmp_path / "data"),
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_MODEL_DIR": str(model_dir),
        "GATEWAY_POLICY_DIR": str(REPO / "policies"),
    }


def test_keys_create_prints_a_working_key_last(env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        app,
        ["keys", "create", "--tenant", "newco", "--role", "requester", "--role", "auditor"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("gk_")
    engine = make_engine(env["GATEWAY_DATABASE_URL"])
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            principal = authenticate(session, key)
            assert principal is not None
            assert principal.tenant_name == "newco"
            assert principal.roles == frozenset({Role.REQUESTER, Role.AUDITOR})
            assert authenticate(session, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
            from sqlalchemy import text

            stored = session.execute(text("SELECT key_hash FROM api_keys")).scalars().all()
            assert stored and all(key.split("_", 2)[2] not in h for h in stored)
    finally:
        engine.dispose()


def test_keys_create_rejects_unknown_role(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["keys", "create", "--tenant", "x", "--role", "god"], env=env)
    assert result.exit_code != 0
    assert "god" in result.output


def test_policy_validate_names_file_and_line(env: dict[str, str], tmp_path: Path) -> None:
    ok = CliRunner().invoke(app, ["policy", "validate"], env=env)
    assert ok.exit_code == 0 and '"valid": true' in ok.stdout
    bad = tmp_path / "bad"
    bad.mkdir()
    for path in (REPO / "policies").rglob("*.yaml"):
        target = bad / path.relative_to(REPO / "policies")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    text = (bad / "content.yaml").read_text()
    original = "low: 0.50, medium: 0.75"
    assert original in text
    (bad / "content.yaml").write_text(text.replace(original, "low: 0.90, medium: 0.75", 1))
    result = CliRunner().invoke(app, ["policy", "validate", str(bad)], env=env)
    assert result.exit_code == 1
    line = next(i for i, t in enumerate(text.splitlines(), 1) if original in t)
    assert f"content.yaml:{line}: categories.sexual.thresholds.prompt" in result.output
    assert "low <= medium <= high" in result.output


def test_models_list_and_verify(env: dict[str, str]) -> None:
    listed = CliRunner().invoke(app, ["models", "list"], env=env)
    assert listed.exit_code == 0
    assert "stabilityai/sdxl-turbo" in listed.stdout and "not installed" in listed.stdout
    ok = CliRunner().invoke(app, ["models", "verify", "demo-tiny"], env=env)
    assert ok.exit_code == 0 and ok.stdout.startswith("ok    demo-tiny")
    bad = CliRunner().invoke(app, ["models", "verify"], env=env)
    assert bad.exit_code == 1 and "FAIL  stabilityai/sdxl-turbo" in bad.stdout
    assert "ok    image checkers  open_nsfw" in bad.stdout


def test_models_verify_loads_the_clip_concept_checker(env: dict[str, str], tmp_path: Path) -> None:
    from tests.tiny_clip import build_tiny_clip, clip_pin

    clip = build_tiny_clip(tmp_path / "clip")
    result = CliRunner().invoke(
        app,
        ["models", "verify"],
        env={**env, "GATEWAY_CLIP_DIR": str(clip), "GATEWAY_CLIP_SHA256": clip_pin(clip)},
    )
    assert "ok    image checkers  clip_concepts, open_nsfw; concept checker from" in result.stdout
    missing = CliRunner().invoke(
        app, ["models", "verify"], env={**env, "GATEWAY_CLIP_DIR": str(tmp_path / "none")}
    )
    # a missing folder makes the concept stage unavailable (fail closed), naming the folder
    assert "FAIL  image checkers  ArtefactUnavailable: clip: folder" in missing.stdout
    assert f"{tmp_path / 'none'} is missing" in missing.stdout


def test_tenants_create_set_and_evaluate(env: dict[str, str]) -> None:
    import json

    run = CliRunner().invoke
    made = run(app, ["tenants", "create", "studio", "--fact", "annual_revenue_usd=250000"], env=env)
    assert made.exit_code == 0 and json.loads(made.stdout)["facts"] == {
        "annual_revenue_usd": 250000
    }
    assert run(app, ["tenants", "create", "studio"], env=env).exit_code != 0
    args = [
        "policy",
        "evaluate",
        "--model",
        "stabilityai/stable-diffusion-3.5-large",
        "--use",
        "commercial",
        "--tenant",
        "studio",
    ]
    denied = run(app, args, env=env)
    assert denied.exit_code == 3 and "stability_registered" in denied.stdout
    changed = run(app, ["tenants", "set", "studio", "--fact", "stability_registered=true"], env=env)
    assert json.loads(changed.stdout)["facts"]["stability_registered"] is True
    allowed = run(app, args, env=env)
    assert allowed.exit_code == 0 and json.loads(allowed.stdout)["decision"] == "allow"
    assert run(app, ["tenants", "set", "nobody", "--fact", "x=1"], env=env).exit_code != 0
    assert "studio" in run(app, ["tenants", "list"], env=env).stdout
