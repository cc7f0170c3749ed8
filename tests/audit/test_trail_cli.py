"""`gateway audit verify | checkpoint | erase` against a real trail."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from sqlalchemy import text
from typer.testing import CliRunner

from gateway.audit.decisions import Opening, close_decision, open_decision
from gateway.audit.signing import Signer
from gateway.cli import app
from gateway.db.engine import unit_of_work
from gateway.runtime import Runtime
from tests.conftest import REPO


def _env(runtime: Runtime) -> dict[str, str]:
    return {
        "GATEWAY_DATA_DIR": str(runtime.settings.data_dir),
        "GATEWAY_DATABASE_URL": runtime.settings.resolved_database_url,
        "GATEWAY_POLICY_DIR": str(REPO / "policies"),
    }


def _decide(runtime: Runtime, user: str) -> str:
    with unit_of_work(runtime.sessions) as session:
        session.execute(
            text(
                "INSERT INTO tenants (id, name, facts, created_at) SELECT 't1', "
                "'t1', '{}', CURRENT_TIMESTAMP WHERE NOT EXISTS "
                "(SELECT 1 FROM tenants WHERE id = 't1')"
            )
        )
        opening = Opening(
            tenant_id="t1",
            key_id="k",
            instance_id="i",
            user=user,
            model_id="demo-tiny",
            licence_id="apache-2.0",
            intended_use="research",
            policy_version="0" * 64,
            request={"prompt": f"secret of {user}"},
        )
        decision_id = open_decision(session, runtime.audit, opening).id
    with unit_of_work(runtime.sessions) as session:
        close_decision(
            session,
            runtime.audit,
            decision_id,
            outcome="allowed",
            http_status=200,
            error_code=None,
            record={"prompt": {"text": f"secret of {user}"}},
        )
    return decision_id


def test_verify_checkpoint_erase(runtime: Runtime) -> None:
    for user in ("ann", "ben", "ann"):
        _decide(runtime, user)
    env = _env(runtime)
    ok = CliRunner().invoke(app, ["audit", "verify"], env=env)
    assert ok.exit_code == 0 and ok.stdout.startswith("audit trail intact: 6 events")
    made = CliRunner().invoke(app, ["audit", "checkpoint"], env=env)
    assert made.exit_code == 0 and '"size": 6' in made.stdout
    again = CliRunner().invoke(app, ["audit", "checkpoint"], env=env)
    assert "nothing new" in again.stdout
    erased = CliRunner().invoke(app, ["audit", "erase", "--user", "ann"], env=env)
    assert erased.exit_code == 0 and "erased 2 decision(s)" in erased.stdout
    after = CliRunner().invoke(app, ["audit", "verify", "--from-last-checkpoint"], env=env)
    assert after.exit_code == 0, after.stdout
    with runtime.engine.connect() as conn:
        values = conn.execute(text("SELECT value FROM personal_data")).scalars().all()
    assert values and all("ann" not in v for v in values)
    with runtime.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER audit_events_no_delete"))
        conn.execute(text("DELETE FROM audit_events WHERE seq = 2"))
    broken = CliRunner().invoke(app, ["audit", "verify"], env=env)
    assert broken.exit_code == 1 and "BROKEN at seq 2: row missing" in broken.stdout


def test_keys_register_list_retire_and_verify_over_a_rotation(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Rotation as docs/audit.md tells it: register the successor, move the signers to it,
    retire the old key; verify accepts both keys' checkpoints, each by its id."""
    _decide(runtime, "ann")
    env = _env(runtime)
    old = runtime.audit.signer
    listed = CliRunner().invoke(app, ["audit", "keys", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert [(k["key_id"], k["status"]) for k in json.loads(listed.stdout)] == [
        (old.key_id, "active")
    ]  # the first start registered its own key
    assert CliRunner().invoke(app, ["audit", "checkpoint"], env=env).exit_code == 0

    new_seed = base64.b64encode(b"n" * 32).decode()
    new = Signer.from_seed_b64(new_seed)
    moved = {**env, "GATEWAY_AUDIT_SIGNING_KEY": new_seed}
    refused = CliRunner().invoke(app, ["audit", "checkpoint"], env=moved)
    assert refused.exit_code == 1 and f"key {new.key_id} is not registered" in refused.output
    pub = tmp_path / "new.pub"
    pub.write_text(new.public_key_b64 + "\n")
    reg = CliRunner().invoke(
        app, ["audit", "keys", "register", "--public-key", str(pub), "--note", "2027"], env=env
    )
    assert reg.exit_code == 0 and f"registered {new.key_id}" in reg.stdout
    bad = CliRunner().invoke(app, ["audit", "keys", "register", "--public-key", "abc"], env=env)
    assert bad.exit_code == 2 and "base64 of 32 bytes" in bad.output
    _decide(runtime, "ben")
    assert CliRunner().invoke(app, ["audit", "checkpoint"], env=moved).exit_code == 0

    retired = CliRunner().invoke(app, ["audit", "keys", "retire", old.key_id], env=env)
    assert retired.exit_code == 0 and "retired" in retired.stdout
    last = CliRunner().invoke(app, ["audit", "keys", "retire", new.key_id], env=env)
    assert last.exit_code == 2 and "only active key" in last.output
    text_list = CliRunner().invoke(app, ["audit", "keys", "list"], env=env).stdout
    assert f"{old.key_id}  retired" in text_list and f"{new.key_id}  active" in text_list
    ok = CliRunner().invoke(app, ["audit", "verify", "--json"], env=moved)
    report = json.loads(ok.stdout)
    assert ok.exit_code == 0 and report["signing_keys"] == [old.key_id, new.key_id]
    pinned = CliRunner().invoke(
        app, ["audit", "verify", "--public-key", new.public_key_b64], env=moved
    )  # an auditor who pins only the new key does not accept the old one's checkpoint
    assert pinned.exit_code == 1 and f"key {old.key_id} is not an accepted key" in pinned.stdout
