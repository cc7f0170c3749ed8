"""Two replicas on one PostgreSQL database, as production runs them (docs/operators.md).

Each replica is a real runtime and FastAPI app with its own data dir and its own audit signing
key; they share the database, the console secret, the watermark key and the C2PA credentials.
An image quarantined through A is revealed through B, a console cookie made by A opens on B,
and verify passes on both over checkpoints signed by both keys. A replica whose key is not
registered, or whose shared secrets differ, refuses to start.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.audit.keyring import KeyNotRegistered, register_key
from gateway.audit.signing import Signer
from gateway.auth.keys import create_key
from gateway.console.session import COOKIE
from gateway.db.engine import unit_of_work
from gateway.domain import Role
from gateway.provenance.credentials import CA_FILE, CHAIN_FILE, KEY_FILE
from gateway.runtime import Models, Runtime, build_runtime
from gateway.settings import Settings
from gateway.shared_secrets import SecretMismatch
from tests.conftest import REPO, _pg_database, auth
from tests.console.conftest import signed_in
from tests.tiny_clip import build_tiny_clip, clip_pin

pytestmark = pytest.mark.postgres

BODY = {"model": "demo-tiny", "prompt": "a quiet harbour", "size": "64x64", "steps": 2, "n": 2}
QUARANTINE_ALL = "    - {text: a bloody wound, category: violence, threshold: -2.0}\n"


def _seed() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from _pg_database()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


def _quarantining_policy(tmp_path: Path) -> Path:
    """The shipped policy, with a concept that always fires and quarantines every image."""
    folder = tmp_path / "policies"
    shutil.copytree(REPO / "policies", folder)
    content = (folder / "content.yaml").read_text()
    head, _, _ = content.partition("  concepts:\n")
    old = "      image: {block_at: high, quarantine_at: medium}\n    terms: [gore"
    content = head + "  concepts:\n" + QUARANTINE_ALL
    assert old in content
    content = content.replace(
        old, "      image: {block_at: never, quarantine_at: low}\n    terms: [gore"
    )
    (folder / "content.yaml").write_text(content)
    return folder


@pytest.fixture
def replica(
    tmp_path: Path, pg_url: str, model_dir: Path, clip_dir: Path, shared_models: Models
) -> Iterator[Callable[..., Runtime]]:
    """``replica(name, signing_seed, **settings)``: a runtime on the shared database."""
    policy = _quarantining_policy(tmp_path)
    shared: dict[str, Any] = {
        "database_url": pg_url,
        "model_dir": model_dir,
        "policy_dir": policy,
        "clip_dir": clip_dir,
        "clip_sha256": clip_pin(clip_dir),
        "console_secret": Fernet.generate_key().decode(),
        "watermark_key": _seed(),
        "reconcile_interval_s": 0,
    }
    made: list[Runtime] = []

    def start(name: str, seed: str, **overrides: Any) -> Runtime:
        data_dir = tmp_path / name
        data_dir.mkdir(exist_ok=True)
        if name != "a" and (tmp_path / "a").is_dir():  # the C2PA credentials, as mounted
            for file in (CA_FILE, CHAIN_FILE, KEY_FILE):
                if not (data_dir / file).exists():
                    shutil.copy2(tmp_path / "a" / file, data_dir / file)
        settings = Settings(
            **{
                **shared,
                "data_dir": data_dir,
                "instance_id": name,
                "audit_signing_key": seed,
                **overrides,
            }
        )
        runtime = build_runtime(settings, shared_models)
        made.append(runtime)
        return runtime

    yield start
    for runtime in made:
        runtime.close()


def _client(runtime: Runtime) -> TestClient:
    return TestClient(create_app(runtime.settings, runtime), base_url="https://testserver")


def test_two_replicas_share_quarantine_console_and_a_verifiable_trail(
    replica: Callable[..., Runtime],
) -> None:
    seed_a, seed_b = _seed(), _seed()
    a = replica("a", seed_a)  # the first start registers its own key
    signer_b = Signer.from_seed_b64(seed_b)
    with pytest.raises(KeyNotRegistered) as refused:
        replica("b", seed_b)
    assert signer_b.key_id in str(refused.value) and "gateway audit keys register" in str(
        refused.value
    )
    with unit_of_work(a.sessions) as session:  # what `gateway audit keys register` does
        register_key(session, signer_b.public_key_b64, note="replica b")
        admin = create_key(
            session, tenant="acme", roles=[Role.ADMIN, Role.AUDITOR, Role.REQUESTER]
        ).secret
    b = replica("b", seed_b)
    assert a.audit.signer.key_id != b.audit.signer.key_id

    with _client(a) as client_a, _client(b) as client_b:
        # quarantined through A, revealed through B, byte for byte as recorded
        r = client_a.post("/v1/images/generations", json=BODY, headers=auth(admin))
        assert r.status_code == 400, r.text
        decision_id = r.json()["error"]["decision_id"]
        record = client_b.get(f"/v1/audit/decisions/{decision_id}", headers=auth(admin)).json()
        assert [i["action"] for i in record["images"]] == ["quarantine", "quarantine"]
        for image in record["images"]:
            shown = client_b.get(
                f"/v1/audit/decisions/{decision_id}/images/{image['index']}", headers=auth(admin)
            )
            assert shown.status_code == 200, shown.text
            assert shown.headers["x-image-sha256"] == image["sha256"]
        assert not (a.settings.data_dir / "quarantine").exists()

        # a checkpoint signed by A, more decisions through B, a checkpoint signed by B
        made_a = client_a.post("/v1/audit/checkpoints", headers=auth(admin)).json()
        assert made_a["created"] and made_a["key_id"] == a.audit.signer.key_id
        r = client_b.post("/v1/images/generations", json=BODY, headers=auth(admin))
        assert r.status_code == 400, r.text
        made_b = client_b.post("/v1/audit/checkpoints", headers=auth(admin)).json()
        assert made_b["created"] and made_b["key_id"] == b.audit.signer.key_id
        for client in (client_a, client_b):
            report = client.get("/v1/audit/verify", headers=auth(admin)).json()
            assert report["ok"], report["summary"]
            assert report["checkpoints_checked"] == 2
            assert report["signing_keys"] == [a.audit.signer.key_id, b.audit.signer.key_id]

        # a console sign-in made by A opens on B
        signed_in(client_a, admin)
        client_b.cookies.set(COOKIE, client_a.cookies[COOKIE], path="/console")
        page = client_b.get("/console/audit/decisions", follow_redirects=False)
        assert page.status_code == 200 and "Sign out" in page.text


def test_a_replica_with_other_shared_secrets_refuses_to_start(
    replica: Callable[..., Runtime],
) -> None:
    seed_a, seed_c = _seed(), _seed()
    a = replica("a", seed_a)
    with unit_of_work(a.sessions) as session:
        register_key(session, Signer.from_seed_b64(seed_c).public_key_b64)
    with pytest.raises(SecretMismatch) as refused:
        replica("c", seed_c, watermark_key=_seed(), console_secret=None)
    message = str(refused.value)
    assert "GATEWAY_WATERMARK_KEY" in message and "GATEWAY_CONSOLE_SECRET" in message
    assert "replica 'a'" in message and "c2pa" not in message


def test_a_retired_key_verifies_its_past_and_nothing_after(
    replica: Callable[..., Runtime],
) -> None:
    from gateway.audit.events import SigningKeyRetired
    from gateway.audit.keyring import retire_key
    from gateway.audit.merkle import Frontier
    from gateway.audit.verify import verify_trail
    from gateway.db.models import AuditCheckpoint

    seed_a, seed_b = _seed(), _seed()
    a = replica("a", seed_a)
    with unit_of_work(a.sessions) as session:
        register_key(session, Signer.from_seed_b64(seed_b).public_key_b64)
        a.audit.append(session, "test_event", {"n": 1})
        assert a.audit.checkpoint(session) is not None
    with unit_of_work(a.sessions) as session:
        retire_key(session, a.audit.signer.key_id)
    with unit_of_work(a.sessions) as session:
        assert verify_trail(session).ok  # its checkpoint before retirement still counts
    b = replica("b", seed_b)
    with pytest.raises(KeyNotRegistered, match="retired"):
        replica("a2", seed_a)
    with unit_of_work(b.sessions) as session:  # A, still running, signs nothing more
        b.audit.append(session, "test_event", {"n": 2})
        with pytest.raises(SigningKeyRetired):
            a.audit.checkpoint(session)
        assert b.audit.checkpoint(session) is not None
    with unit_of_work(b.sessions) as session:
        report = verify_trail(session)
    assert report.ok and report.signing_keys == (a.audit.signer.key_id, b.audit.signer.key_id)

    # whoever still holds the retired key writes a checkpoint behind the gateway's back
    with unit_of_work(b.sessions) as session:
        b.audit.append(session, "test_event", {"n": 3})
        head = a.audit._locked_head(session.connection())
        frontier = Frontier(size=head.seq, nodes=list(head.nodes))
        session.add(AuditCheckpoint(**a.audit._checkpoint_row(head.seq, head.chain_hash, frontier)))
    with unit_of_work(b.sessions) as session:
        report = verify_trail(session)
    assert not report.ok and "after it was retired" in (report.reason or "")
