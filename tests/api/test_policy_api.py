"""Licence evaluation over HTTP, tenant facts via the admin API, and agreement with the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gateway.cli import app
from gateway.domain import Role
from gateway.runtime import Runtime
from tests.conftest import REPO, KeyFactory, auth


def test_evaluate_uses_the_callers_tenant_facts(client: TestClient, make_key: KeyFactory) -> None:
    admin = make_key(Role.ADMIN, tenant="ops")
    r = client.post(
        "/v1/admin/tenants",
        headers=auth(admin),
        json={"name": "smallco", "facts": {"annual_revenue_usd": 10}},
    )
    assert r.status_code == 201, r.text
    user = make_key(Role.REQUESTER, tenant="smallco")
    body = {"model": "stabilityai/sdxl-turbo", "intended_use": "commercial"}
    denied = client.post("/v1/policy/evaluate", json=body, headers=auth(user))
    assert denied.status_code == 200
    out = denied.json()
    assert out["decision"] == "deny" and out["tenant"] == "smallco"
    assert out["reasons"][0]["licence"] == "stability-nc-research-2023-11-28"
    assert out["reasons"][0]["clause"]
    assert len(out["policy_version"]) == 64 and out["rights"]["commercial_use"] == "denied"
    ok = client.post(
        "/v1/policy/evaluate",
        headers=auth(user),
        json={"model": "demo-tiny", "intended_use": "commercial"},
    ).json()
    assert ok["decision"] == "allow" and ok["rights"]["licence"]["id"] == "apache-2.0"


def test_evaluate_with_prompt_includes_content_check(
    client: TestClient, make_key: KeyFactory
) -> None:
    r = client.post(
        "/v1/policy/evaluate",
        headers=auth(make_key()),
        json={"model": "demo-tiny", "intended_use": "research", "prompt": "explicit porn"},
    )
    assert r.json()["decision"] == "deny"
    assert r.json()["prompt_assessment"]["action"] == "block"


def test_only_admins_evaluate_for_other_tenants(client: TestClient, make_key: KeyFactory) -> None:
    body = {"model": "demo-tiny", "intended_use": "research", "tenant": "someone-else"}
    r = client.post("/v1/policy/evaluate", json=body, headers=auth(make_key()))
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"
    admin = make_key(Role.ADMIN, tenant="ops")
    r = client.post("/v1/policy/evaluate", json=body, headers=auth(admin))
    assert r.status_code == 404 and r.json()["error"]["code"] == "tenant_not_found"


def test_admin_routes_need_admin(client: TestClient, make_key: KeyFactory) -> None:
    key = make_key(Role.REQUESTER, Role.AUDITOR, Role.LEGAL_EDITOR)
    assert client.get("/v1/admin/tenants", headers=auth(key)).status_code == 403
    assert (
        client.post(
            "/v1/admin/keys", headers=auth(key), json={"tenant": "x", "roles": ["admin"]}
        ).status_code
        == 403
    )


def test_admin_sets_facts_and_creates_keys(client: TestClient, make_key: KeyFactory) -> None:
    admin = make_key(Role.ADMIN, tenant="ops")
    client.post("/v1/admin/tenants", headers=auth(admin), json={"name": "bigco", "facts": {}})
    r = client.patch(
        "/v1/admin/tenants/bigco",
        headers=auth(admin),
        json={"facts": {"annual_revenue_usd": 5_000_000, "x": "y"}, "unset": ["x"]},
    )
    assert r.status_code == 200 and r.json()["facts"] == {"annual_revenue_usd": 5_000_000}
    assert (
        client.post("/v1/admin/tenants", headers=auth(admin), json={"name": "bigco"}).status_code
        == 409
    )
    assert (
        client.patch("/v1/admin/tenants/nope", headers=auth(admin), json={"facts": {}}).status_code
        == 404
    )
    created = client.post(
        "/v1/admin/keys",
        headers=auth(admin),
        json={"tenant": "bigco", "roles": ["requester"], "default_intended_use": "research"},
    )
    assert created.status_code == 201
    key = created.json()["key"]
    listed = client.get("/v1/models", headers=auth(key))
    assert listed.status_code == 200
    r = client.post(
        "/v1/policy/evaluate",
        headers=auth(key),
        json={"model": "demo-tiny", "intended_use": "research"},
    )
    assert r.json()["facts_used"] == {}


def test_http_cli_and_generation_agree(
    client: TestClient, runtime: Runtime, make_key: KeyFactory, tmp_path: Path
) -> None:
    admin = make_key(Role.ADMIN, tenant="ops")
    client.post("/v1/admin/tenants", headers=auth(admin), json={"name": "labco", "facts": {}})
    key = make_key(Role.REQUESTER, tenant="labco")
    env = {
        "GATEWAY_DATA_DIR": str(runtime.settings.data_dir),
        "GATEWAY_DATABASE_URL": runtime.settings.resolved_database_url,
        "GATEWAY_POLICY_DIR": str(REPO / "policies"),
    }
    for use in ("research", "commercial"):
        http = client.post(
            "/v1/policy/evaluate",
            headers=auth(key),
            json={"model": "stabilityai/sdxl-turbo", "intended_use": use},
        ).json()
        cli = CliRunner().invoke(
            app,
            [
                "policy",
                "evaluate",
                "--model",
                "stabilityai/sdxl-turbo",
                "--use",
                use,
                "--tenant",
                "labco",
            ],
            env=env,
        )
        assert json.loads(cli.stdout)["decision"] == http["decision"]
        assert json.loads(cli.stdout)["reasons"] == http["reasons"]
        assert (cli.exit_code == 0) == (http["decision"] == "allow")
        gen = client.post(
            "/v1/images/generations",
            headers=auth(key),
            json={
                "model": "stabilityai/sdxl-turbo",
                "prompt": "a cat",
                "size": "512x512",
                "governance": {"intended_use": use},
            },
        )
        # allowed by the licence, the request reaches the (absent) weights: 503, not 403
        assert gen.status_code == (503 if http["decision"] == "allow" else 403)
        if gen.status_code == 403:
            assert gen.json()["error"]["reasons"] == http["reasons"]
