"""Revoking an API key (admin route and CLI): the next request with it is refused."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from gateway.cli import app
from gateway.db.engine import unit_of_work
from gateway.db.models import AuditEvent
from gateway.domain import Role
from gateway.runtime import Runtime
from tests.conftest import KeyFactory, auth


def test_admin_revokes_a_key_and_it_stops_working_at_once(
    client: TestClient, runtime: Runtime, make_key: KeyFactory
) -> None:
    admin, victim = make_key(Role.ADMIN), make_key(Role.REQUESTER)
    assert client.get("/v1/models", headers=auth(victim)).status_code == 200
    key_id = victim.split("_")[1]
    assert client.delete(f"/v1/admin/keys/{key_id}", headers=auth(victim)).status_code == 403
    r = client.delete(f"/v1/admin/keys/{key_id}", headers=auth(admin))
    assert r.status_code == 200 and r.json()["revoked"] is True
    r = client.get("/v1/models", headers=auth(victim))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert client.delete("/v1/admin/keys/nosuchkey", headers=auth(admin)).status_code == 404
    with unit_of_work(runtime.sessions) as session:
        kinds = list(session.scalars(select(AuditEvent.kind)))
    assert kinds.count("key.revoked") == 1


def test_cli_revokes_a_key(runtime: Runtime, make_key: KeyFactory) -> None:
    key = make_key(Role.REQUESTER)
    s = runtime.settings
    env = {
        "GATEWAY_DATA_DIR": str(s.data_dir),
        "GATEWAY_DATABASE_URL": s.resolved_database_url,
        "GATEWAY_POLICY_DIR": str(s.policy_dir),
        "GATEWAY_MODEL_DIR": str(Path(s.model_dir or s.data_dir)),
    }
    result = CliRunner().invoke(app, ["keys", "revoke", key.split("_")[1]], env=env)
    assert result.exit_code == 0, result.output
    with TestClient(app=_app(runtime)) as client:
        assert client.get("/v1/models", headers=auth(key)).status_code == 401
    assert CliRunner().invoke(app, ["keys", "revoke", "nosuchkey"], env=env).exit_code == 2


def _app(runtime: Runtime):  # type: ignore[no-untyped-def]
    from gateway.app import create_app

    return create_app(runtime.settings, runtime)
