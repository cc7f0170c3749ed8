"""`gateway finetune run` over demo-tiny -> draft -> two people approve -> the adapter serves.

Real parts throughout: the licence gate evaluates the policy bundle with the adapter's entry
added, the LoRA is trained with peft on demo-tiny's UNet, the draft goes through the same
four-eyes workflow as any policy change, and generation loads the adapter with diffusers'
load_lora_weights over the already loaded base.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import yaml
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from typer.testing import CliRunner

from gateway.app import create_app
from gateway.cli import app as cli
from gateway.db.engine import unit_of_work
from gateway.db.models import AuditEvent
from gateway.domain import Role
from gateway.generation.models import ModelManager
from gateway.generation.pins import sha256_file
from gateway.runtime import Runtime
from tests.conftest import auth
from tests.finetune.helpers import cli_env, make_images, private_model_dir

NAME = "acme/tiny-brand-lora"


def _events(runtime: Runtime, kind: str) -> list[dict[str, object]]:
    with unit_of_work(runtime.sessions) as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.kind == kind)).all()
        return [json.loads(r.payload)["body"] for r in rows]


def _generate(client: TestClient, key: str, model: str, **extra: object) -> dict[str, object]:
    body = {
        "model": model,
        "prompt": "a red circle, brand style",
        "size": "64x64",
        "steps": 2,
        "seed": 7,
        **extra,
    }
    r = client.post("/v1/images/generations", json=body, headers=auth(key))
    assert r.status_code == 200, r.text
    out: dict[str, object] = r.json()
    return out


def _pixels(answer: dict[str, object]) -> np.ndarray:
    data = answer["data"]
    assert isinstance(data, list)
    raw = base64.b64decode(data[0]["b64_json"])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.int16)


def test_non_commercial_base_refuses_a_commercial_adapter(runtime: Runtime, tmp_path: Path) -> None:
    images = make_images(tmp_path / "images", count=3)
    env = cli_env(runtime)
    run = CliRunner().invoke(
        cli,
        [
            *("finetune", "run", "--base", "stabilityai/sdxl-turbo", "--images", str(images)),
            *("--rights", "owned", "--name", "acme/turbo-lora", "--intended-use", "commercial"),
        ],
        env=env,
    )
    assert run.exit_code == 3, run.output
    assert "refused" in run.stderr and "§1(a)" in run.stderr  # the NC licence's clause
    assert "stability-nc-research-2023-11-28" in run.stderr
    # unknown image rights: research only, whatever the base allows
    unknown = CliRunner().invoke(
        cli,
        [
            *("finetune", "run", "--base", "demo-tiny", "--images", str(images)),
            *("--rights", "unknown", "--name", "acme/unknown-lora", "--intended-use", "commercial"),
        ],
        env=env,
    )
    assert unknown.exit_code == 3, unknown.output
    assert "training-images-rights-unknown" in unknown.stderr
    refused = _events(runtime, "finetune.refused")
    assert [e["name"] for e in refused] == ["acme/turbo-lora", "acme/unknown-lora"]
    assert not (runtime.settings.resolved_model_dir / "loras" / "acme-turbo-lora").exists()


def test_finetune_then_approval_then_generation_with_lineage(
    runtime_factory: object,
    settings_factory: object,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    own = private_model_dir(model_dir, tmp_path)
    runtime = runtime_factory(settings_factory(model_dir=own))  # type: ignore[operator]
    with TestClient(create_app(runtime.settings, runtime)) as client:
        _flow(runtime, client, own, tmp_path)


def _key(runtime: Runtime, *roles: Role) -> str:
    from gateway.auth.keys import create_key

    with unit_of_work(runtime.sessions) as session:
        return create_key(session, tenant="acme", roles=roles).secret


def _flow(runtime: Runtime, client: TestClient, own: Path, tmp_path: Path) -> None:
    requester = _key(runtime, Role.REQUESTER)
    legal = _key(runtime, Role.LEGAL_EDITOR)
    second = _key(runtime, Role.LEGAL_APPROVER)
    images = make_images(tmp_path / "images")
    # one training image made by this gateway: the manifest must flag its C2PA manifest
    made = _generate(client, requester, "demo-tiny", size="256x256")
    (images / "blue square" / "from-gateway.png").write_bytes(
        base64.b64decode(made["data"][0]["b64_json"])  # type: ignore[index]
    )
    base_before = _pixels(_generate(client, requester, "demo-tiny"))

    env = cli_env(runtime)
    args = [
        *("finetune", "run", "--base", "demo-tiny", "--images", str(images)),
        *("--rights", "owned", "--rights-note", "Acme photo studio, 2026", "--name", NAME),
        *("--intended-use", "commercial", "--steps", "6", "--resolution", "64"),
        *("--learning-rate", "0.01", "--author", "ops-anna"),
    ]
    run = CliRunner().invoke(cli, args, env=env)
    assert run.exit_code == 0, run.output
    draft_id = int(run.stdout.strip().splitlines()[-1])
    assert "duplicates (trained once)" in run.stdout

    # the training set is in the trail
    (trained,) = _events(runtime, "finetune.training_set")
    manifest = trained["manifest"]
    assert isinstance(manifest, dict)
    assert manifest["count"] == 14 and manifest["unique"] == 13 and manifest["rights"] == "owned"
    assert manifest["rights_note"] == "Acme photo studio, 2026"
    assert manifest["duplicates"] == [["blue square/00-copy.png", "blue square/00.png"]]
    flagged = {f["path"]: f["markers"] for f in manifest["ai_generated_or_c2pa"]}
    assert "c2pa:signed_by_this_gateway" in flagged["blue square/from-gateway.png"]
    assert "png_text:gateway:digital_source_type" in flagged["blue square/from-gateway.png"]
    assert len(flagged) == 1
    adapter = own / "loras" / "acme-tiny-brand-lora" / "pytorch_lora_weights.safetensors"
    digest = sha256_file(adapter)
    (done,) = _events(runtime, "finetune.completed")
    assert done["adapter_sha256"] == digest and done["draft"] == draft_id
    assert done["manifest_sha256"] == manifest["manifest_sha256"]

    # the draft registers it: kind lora, its base, its pin, the rights as a restriction
    draft = client.get(f"/v1/policies/versions/{draft_id}", headers=auth(legal)).json()
    assert draft["status"] == "draft" and draft["authors"] == ["cli:ops-anna"]
    entry = yaml.safe_load(draft["files"]["models.yaml"])["models"][NAME]
    assert entry["source"]["kind"] == "lora" and entry["base"] == "demo-tiny"
    assert entry["pins"] == {"pytorch_lora_weights.safetensors": digest}
    assert entry["use_restrictions"][0]["note"] == "Acme photo studio, 2026"

    body = {"model": NAME, "prompt": "x", "size": "64x64", "steps": 2, "seed": 7}
    r = client.post("/v1/images/generations", json=body, headers=auth(requester))
    assert r.status_code == 404  # a draft is not in force
    r = client.post(f"/v1/policies/drafts/{draft_id}/submit", headers=auth(legal))
    assert r.status_code == 200, r.text
    r = client.post(f"/v1/policies/drafts/{draft_id}/approve", headers=auth(second))
    assert r.status_code == 200, r.text

    tuned = _generate(client, requester, NAME)
    base_after = _pixels(_generate(client, requester, "demo-tiny"))
    assert np.abs(_pixels(tuned) - base_before).max() > 0  # the adapter changes the images
    assert np.array_equal(base_after, base_before)  # and is switched off for the base
    governance = tuned["governance"]
    assert isinstance(governance, dict)
    lineage = governance["model"]["lineage"]
    base_sha = runtime.policy.current().models.status("demo-tiny").weights_sha256
    assert lineage == [
        {"id": NAME, "kind": "lora", "licence": "apache-2.0", "weights_sha256": digest},
        {
            "id": "demo-tiny",
            "kind": "demo_tiny",
            "licence": "apache-2.0",
            "weights_sha256": base_sha,
        },
    ]
    assert governance["model"]["weights_sha256"] == digest
    assert governance["rights"]["licence"]["chain"] == ["apache-2.0", "apache-2.0"]
    refs = [u["ref"] for u in governance["rights"]["use_restrictions"]]
    assert f"{NAME}-training-set" in refs
    decision = client.get(
        f"/v1/audit/decisions/{governance['decision_id']}",
        headers=auth(_key(runtime, Role.AUDITOR)),
    ).json()
    recorded = json.dumps(decision)
    assert '"lineage"' in recorded and digest in recorded and base_sha in recorded

    verify = CliRunner().invoke(cli, ["audit", "verify"], env=env)
    assert verify.exit_code == 0 and verify.stdout.startswith("audit trail intact"), verify.output

    # a changed adapter file stops it
    adapter.write_bytes(adapter.read_bytes()[:-4] + b"\0\0\0\0")
    manager = ModelManager(runtime.policy.current().bundle.models, own)
    manager.prepare()
    status = manager.status(NAME)
    assert not status.available and "sha256" in (status.reason or "")
    assert manager.status("demo-tiny").available
