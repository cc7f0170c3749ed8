"""/v1/policies: drafts, validation, tests, replay and four-eyes publishing, end to end."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from gateway.app import create_app
from gateway.audit.verify import verify_trail
from gateway.db.engine import unit_of_work
from gateway.db.models import AuditEvent, Decision
from gateway.domain import Role
from gateway.policy.store import IN_REVIEW, insert_version
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.conftest import KeyFactory, auth

BODY = {"model": "demo-tiny", "prompt": "a pagoda at dusk", "size": "64x64", "steps": 2}
VIOLENCE_TERMS = "terms: [gore, gory,"


def _with_term(content: str, term: str) -> str:
    assert VIOLENCE_TERMS in content
    return content.replace(VIOLENCE_TERMS, f"terms: [{term}, gore, gory,", 1)


def _draft(client: TestClient, key: str, term: str = "pagoda") -> tuple[int, dict[str, str]]:
    files = client.get("/v1/policies/versions/1", headers=auth(key)).json()["files"]
    r = client.post(
        "/v1/policies/drafts",
        json={"files": {"content.yaml": _with_term(files["content.yaml"], term)}, "note": "x"},
        headers=auth(key),
    )
    assert r.status_code == 201, r.text
    return int(r.json()["draft_id"]), files


def test_seed_bundle_is_published_version_1(
    client: TestClient, runtime: Runtime, make_key: KeyFactory
) -> None:
    legal = make_key(Role.LEGAL_EDITOR)
    r = client.get("/v1/policies/active", headers=auth(legal))
    assert r.status_code == 200, r.text
    active = r.json()
    assert active["id"] == 1 and active["status"] == "published"
    assert active["sha256"] == runtime.bundle.version
    assert active["approved_by"] == "system:seed"
    versions = client.get("/v1/policies/versions", headers=auth(legal)).json()["data"]
    assert [v["id"] for v in versions] == [1]
    full = client.get("/v1/policies/versions/1", headers=auth(legal)).json()
    assert "content.yaml" in full["files"] and "licences/apache-2.0.yaml" in full["files"]
    requester = make_key(Role.REQUESTER)
    assert client.get("/v1/policies/active", headers=auth(requester)).status_code == 403
    r = client.post("/v1/policies/drafts", json={}, headers=auth(make_key(Role.AUDITOR)))
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"


def test_edit_replay_submit_and_four_eyes_publish(
    client: TestClient, runtime: Runtime, make_key: KeyFactory
) -> None:
    requester, editor = make_key(Role.REQUESTER), make_key(Role.LEGAL_EDITOR)
    approver = make_key(Role.LEGAL_APPROVER)
    both = make_key(Role.LEGAL_EDITOR, Role.LEGAL_APPROVER)
    before = client.post("/v1/images/generations", json=BODY, headers=auth(requester))
    assert before.status_code == 200, before.text
    old_sha = before.json()["governance"]["policy_version"]

    draft_id, _ = _draft(client, both)
    assert client.post(f"/v1/policies/drafts/{draft_id}/validate", headers=auth(both)).json() == {
        "valid": True,
        "errors": [],
    }
    tests = client.post(f"/v1/policies/drafts/{draft_id}/test", headers=auth(both)).json()
    assert tests["passed"] and tests["total"] > 10 and tests["failed"] == 0

    replay = client.post(
        f"/v1/policies/drafts/{draft_id}/replay", json={"limit": 100}, headers=auth(both)
    ).json()
    assert replay["evaluated"] == 1 and replay["changed"] == 1
    change = replay["changes"][0]
    assert change["decision_id"] == before.json()["governance"]["decision_id"]
    assert (change["before"], change["after"]) == ("allowed", "prompt_blocked")
    assert any("pagoda" in reason for reason in change["reasons"]), change

    # a second editor touches the draft: both are authors now
    r = client.put(
        f"/v1/policies/drafts/{draft_id}",
        json={"files": {}, "note": "block pagodas (test)"},
        headers=auth(editor),
    )
    assert r.status_code == 200 and len(r.json()["authors"]) == 2
    r = client.post(f"/v1/policies/drafts/{draft_id}/submit", headers=auth(editor))
    assert r.status_code == 200 and r.json()["status"] == "in_review"
    assert (
        client.put(
            f"/v1/policies/drafts/{draft_id}", json={"files": {}}, headers=auth(editor)
        ).status_code
        == 409
    )

    r = client.post(f"/v1/policies/drafts/{draft_id}/approve", headers=auth(both))
    assert r.status_code == 403 and r.json()["error"]["code"] == "four_eyes_required"
    r = client.post(f"/v1/policies/drafts/{draft_id}/approve", headers=auth(editor))
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_role"
    r = client.post(f"/v1/policies/drafts/{draft_id}/approve", headers=auth(approver))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "published"

    active = client.get("/v1/policies/active", headers=auth(approver)).json()
    assert active["id"] == draft_id and active["enforced_here"] == draft_id
    history = {
        v["id"]: v["status"]
        for v in client.get("/v1/policies/versions", headers=auth(approver)).json()["data"]
    }
    assert history == {1: "retired", draft_id: "published"}
    diff = client.get(f"/v1/policies/versions/1/diff/{draft_id}", headers=auth(approver)).json()
    assert [f["path"] for f in diff["files"]] == ["content.yaml"]
    assert "+    terms: [pagoda, gore" in diff["files"][0]["diff"]

    after = client.post("/v1/images/generations", json=BODY, headers=auth(requester))
    assert after.status_code == 400 and after.json()["error"]["code"] == "content_policy_violation"
    with unit_of_work(runtime.sessions) as session:
        newest = session.scalars(select(Decision).order_by(Decision.created_at.desc())).first()
        assert newest is not None and newest.policy_version == active["sha256"] != old_sha
        assert newest.record is not None and newest.record["policy"]["version_id"] == draft_id
        kinds = list(
            session.scalars(select(AuditEvent.kind).where(AuditEvent.kind.like("policy.%")))
        )
        assert verify_trail(session, runtime.audit.signer.public_key_b64).ok
    assert kinds == [  # the seed import is a bootstrap, not an event
        "policy.draft_created",
        "policy.draft_updated",
        "policy.submitted",
        "policy.published",
    ]


def test_validation_errors_name_file_and_line(client: TestClient, make_key: KeyFactory) -> None:
    editor = make_key(Role.LEGAL_EDITOR)
    files = client.get("/v1/policies/versions/1", headers=auth(editor)).json()["files"]
    content = files["content.yaml"]
    broken = content.replace(
        "prompt: {low: 0.50, medium: 0.75, high: 0.92}",
        "prompt: {low: 0.50, medium: 0.75, high: 7}",
        1,
    )
    line = next(i for i, ln in enumerate(broken.splitlines(), 1) if "high: 7}" in ln)
    r = client.post(
        "/v1/policies/drafts", json={"files": {"content.yaml": broken}}, headers=auth(editor)
    )
    assert r.status_code == 201
    draft_id = r.json()["draft_id"]
    assert r.json()["validation"]["valid"] is False
    errors = client.post(f"/v1/policies/drafts/{draft_id}/validate", headers=auth(editor)).json()
    assert errors["valid"] is False
    assert [(e["file"], e["line"]) for e in errors["errors"]] == [("content.yaml", line)]
    assert "high" in errors["errors"][0]["path"]
    r = client.post(f"/v1/policies/drafts/{draft_id}/submit", headers=auth(editor))
    assert r.status_code == 422 and r.json()["error"]["code"] == "policy_invalid"
    # fixed in place, it goes through
    r = client.put(
        f"/v1/policies/drafts/{draft_id}",
        json={"files": {"content.yaml": content}},
        headers=auth(editor),
    )
    assert r.json()["validation"]["valid"] is True
    r = client.post(
        "/v1/policies/drafts", json={"files": {"../x.yaml": "a: 1"}}, headers=auth(editor)
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_files"


def test_failing_policy_tests_block_submission(client: TestClient, make_key: KeyFactory) -> None:
    editor = make_key(Role.LEGAL_EDITOR)
    files = client.get("/v1/policies/versions/1", headers=auth(editor)).json()["files"]
    # deny commercial use under Apache-2.0: the bundle's own tests expect it allowed
    name, allowed = "licences/apache-2.0.yaml", 'commercial: {status: allowed, clause: "§2"}'
    assert allowed in files[name]
    r = client.post(
        "/v1/policies/drafts",
        json={"files": {name: files[name].replace(allowed, allowed.replace("allowed", "denied"))}},
        headers=auth(editor),
    )
    draft_id = r.json()["draft_id"]
    assert r.json()["validation"]["valid"] is True
    result = client.post(f"/v1/policies/drafts/{draft_id}/test", headers=auth(editor)).json()
    assert result["passed"] is False and result["failed"] >= 1
    r = client.post(f"/v1/policies/drafts/{draft_id}/submit", headers=auth(editor))
    assert r.status_code == 422 and r.json()["error"]["code"] == "policy_tests_failed"


def test_failing_content_cases_block_submission_and_approval(
    client: TestClient, runtime: Runtime, make_key: KeyFactory
) -> None:
    """A draft that blocks "a lighthouse at dusk" fails the seed content cases: it cannot be
    submitted; and one submitted before a content case was added cannot be approved."""
    editor, approver = make_key(Role.LEGAL_EDITOR), make_key(Role.LEGAL_APPROVER)
    draft_id, files = _draft(client, editor, term="lighthouse")
    result = client.post(f"/v1/policies/drafts/{draft_id}/test", headers=auth(editor)).json()
    assert result["passed"] is False and result["failed"] == 1, result
    assert result["content_cases"] >= 40 and result["licence_cases"] >= 60
    (failure,) = [c for c in result["cases"] if not c["passed"]]
    assert failure["kind"] == "content" and failure["name"] == "a lighthouse at dusk"
    assert failure["file"] == "tests/content_test.yaml" and failure["line"] > 1
    assert failure["failures"] == ["the prompt is blocked (by violence), expected allowed"]
    r = client.post(f"/v1/policies/drafts/{draft_id}/submit", headers=auth(editor))
    assert r.status_code == 422 and r.json()["error"]["code"] == "policy_tests_failed"
    assert "a lighthouse at dusk" in r.json()["error"]["message"]

    # a version that reached review without the checks (an older gateway submitted it, say)
    # is refused at approval, through the same real classifier
    content = _with_term(files["content.yaml"], "lighthouse")
    with unit_of_work(runtime.sessions) as session:
        row = insert_version(
            session,
            {**files, "content.yaml": content},
            status=IN_REVIEW,
            principal="key:older-gateway",
            base_version=1,
            note="submitted before content cases existed",
        )
        stale = row.id
    r = client.post(f"/v1/policies/drafts/{stale}/approve", headers=auth(approver))
    assert r.status_code == 422 and r.json()["error"]["code"] == "policy_tests_failed"
    assert client.get("/v1/policies/active", headers=auth(approver)).json()["id"] == 1


def test_reject_needs_a_reason_and_ends_the_draft(client: TestClient, make_key: KeyFactory) -> None:
    editor, approver = make_key(Role.LEGAL_EDITOR), make_key(Role.LEGAL_APPROVER)
    draft_id, _ = _draft(client, editor)
    client.post(f"/v1/policies/drafts/{draft_id}/submit", headers=auth(editor))
    r = client.post(
        f"/v1/policies/drafts/{draft_id}/reject", json={"reason": " "}, headers=auth(approver)
    )
    assert r.status_code == 422
    r = client.post(
        f"/v1/policies/drafts/{draft_id}/reject",
        json={"reason": "too broad"},
        headers=auth(approver),
    )
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert r.json()["reason"] == "too broad"
    r = client.post(f"/v1/policies/drafts/{draft_id}/approve", headers=auth(approver))
    assert r.status_code == 409


def test_database_refuses_to_change_a_published_version(runtime: Runtime) -> None:
    with (
        pytest.raises(Exception, match=r"immutable|no longer a draft"),
        unit_of_work(runtime.sessions) as session,
    ):
        session.execute(text("UPDATE policy_versions SET files = '{}' WHERE id = 1"))
    with (
        pytest.raises(Exception, match="cannot be deleted"),
        unit_of_work(runtime.sessions) as session,
    ):
        session.execute(text("DELETE FROM policy_versions WHERE id = 1"))


def test_every_replica_switches_and_a_schedule_is_kept(
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
) -> None:
    a = runtime_factory(settings_factory(policy_refresh_s=0.2, instance_id="a"))
    b = runtime_factory(settings_factory(policy_refresh_s=0.2, instance_id="b"))
    keys: dict[str, str] = {}
    with unit_of_work(a.sessions) as session:
        from gateway.auth.keys import create_key

        for role in (Role.LEGAL_EDITOR, Role.LEGAL_APPROVER):
            keys[role.value] = create_key(session, tenant="acme", roles=(role,)).secret
    editor, approver = keys["legal_editor"], keys["legal_approver"]
    with TestClient(create_app(a.settings, a)) as client:
        draft_id, _ = _draft(client, editor)
        client.post(f"/v1/policies/drafts/{draft_id}/submit", headers=auth(editor))
        when = datetime.now(UTC) + timedelta(seconds=15)  # approving runs every test first
        r = client.post(
            f"/v1/policies/drafts/{draft_id}/approve",
            json={"effective_at": when.isoformat()},
            headers=auth(approver),
        )
        assert r.status_code == 200 and r.json()["state"] == "scheduled"
        assert client.get("/v1/policies/active", headers=auth(editor)).json()["id"] == 1
    assert a.policy.current().version_id == 1 and b.policy.current().version_id == 1
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline and {
        a.policy.current().version_id,
        b.policy.current().version_id,
    } != {draft_id}:
        time.sleep(0.1)
    assert a.policy.current().version_id == b.policy.current().version_id == draft_id
    assert datetime.now(UTC) >= when


def test_replay_counts_every_tenant_but_lists_only_the_callers(
    client: TestClient, make_key: KeyFactory
) -> None:
    other = make_key(Role.REQUESTER, tenant="globex")
    assert client.post("/v1/images/generations", json=BODY, headers=auth(other)).status_code == 200
    editor, admin = make_key(Role.LEGAL_EDITOR), make_key(Role.ADMIN)
    draft_id, _ = _draft(client, editor)
    url = f"/v1/policies/drafts/{draft_id}/replay"
    mine = client.post(url, json={"limit": 10}, headers=auth(editor)).json()
    assert (mine["evaluated"], mine["changed"], mine["changes"]) == (1, 1, [])
    assert mine["changes_scope"] == "your tenant"
    everyone = client.post(url, json={"limit": 10}, headers=auth(admin)).json()
    assert everyone["changes_scope"] == "all tenants" and len(everyone["changes"]) == 1
    r = client.post(url, json={"limit": 0}, headers=auth(editor))
    assert r.status_code == 422


def test_a_version_that_fails_to_build_leaves_the_old_models_serving(
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A newly active version with other models whose classifiers fail to build: the replica
    keeps the version in force, its models keep generating (they are not retired), and the
    models loaded for the failed version are released (no owner thread left behind)."""
    import threading

    import gateway.runtime as runtime_module
    from gateway.auth.keys import create_key
    from gateway.policy.store import PUBLISHED, decode_files, get_row

    # no background refresher: this test's own refresh is the only build of the new version
    runtime = runtime_factory(settings_factory(generation_timeout_s=1.0, policy_refresh_s=0))
    with unit_of_work(runtime.sessions) as session:
        files = decode_files(get_row(session, 1).files)
        requester = create_key(session, tenant="acme", roles=(Role.REQUESTER,)).secret
    models_yaml = files["models.yaml"].replace(
        "    steps: {min: 1, max: 50, default: 4}\n",
        "    steps: {min: 1, max: 50, default: 4}\n    options: {max_batch: 4}\n",
        1,
    )
    assert models_yaml != files["models.yaml"]
    owners = {t.ident for t in threading.enumerate() if t.name.startswith("owner-")}

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("duplicate concept texts")

    monkeypatch.setattr(runtime_module, "build_prompt_stage", broken)
    monkeypatch.setattr(runtime_module, "build_image_stage", broken)
    with unit_of_work(runtime.sessions) as session:
        row = insert_version(
            session,
            {**files, "models.yaml": models_yaml},
            status=PUBLISHED,
            principal="key:test",
            base_version=1,
            note="max_batch 4",
        )
        row.effective_at = row.created_at
    with pytest.raises(ValueError, match="duplicate concept texts"):
        runtime.policy.refresh()
    assert runtime.policy.current().version_id == 1

    time.sleep(1.5)  # past generation_timeout_s: a wrongly started retirement would have run
    with TestClient(create_app(runtime.settings, runtime)) as client:
        r = client.post("/v1/images/generations", json=BODY, headers=auth(requester))
    assert r.status_code == 200, r.text
    left = {t.ident for t in threading.enumerate() if t.name.startswith("owner-")} - owners
    assert not left
