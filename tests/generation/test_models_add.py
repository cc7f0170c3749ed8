"""`gateway models add` -> legal submits -> a second person approves -> the model generates.

A copy of demo-tiny stands in for a real model folder: it goes through the same loader,
pinning and policy workflow as downloaded weights would.
"""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import yaml
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from gateway.cli import app as cli
from gateway.domain import Role
from gateway.generation.onboard import with_model
from gateway.generation.pins import sha256_file
from gateway.runtime import Runtime
from tests.conftest import KeyFactory, auth

REPO = Path(__file__).resolve().parent.parent.parent
MODEL = "acme/tiny-copy"


def _env(runtime: Runtime) -> dict[str, str]:
    s = runtime.settings
    return {
        "GATEWAY_DATA_DIR": str(s.data_dir),  # same audit signing key as the server
        "GATEWAY_DATABASE_URL": s.resolved_database_url,
        "GATEWAY_MODEL_DIR": str(s.resolved_model_dir),
        "GATEWAY_POLICY_DIR": str(s.policy_dir),
    }


def _generate(client: TestClient, key: str, model: str) -> tuple[int, dict[str, object]]:
    body = {"model": model, "prompt": "a lighthouse at dusk", "size": "64x64", "steps": 2}
    r = client.post("/v1/images/generations", json=body, headers=auth(key))
    return r.status_code, r.json()


def test_models_add_then_approval_then_generation(
    runtime: Runtime,
    client: TestClient,
    make_key: KeyFactory,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "weights" / "tiny-copy"
    shutil.copytree(model_dir / "demo-tiny", folder)
    requester = make_key(Role.REQUESTER)
    legal = make_key(Role.LEGAL_EDITOR, Role.LEGAL_APPROVER)
    second = make_key(Role.LEGAL_APPROVER)
    status, before = _generate(client, requester, MODEL)
    assert status in (400, 404, 422), before  # not registered yet

    run = CliRunner().invoke(
        cli,
        [
            *("models", "add", MODEL, "--path", str(folder), "--licence", "apache-2.0"),
            *("--sizes", "32x32,64x64", "--steps", "1:8:2", "--author", "ops-anna"),
        ],
        env=_env(runtime),
    )
    assert run.exit_code == 0, run.output
    draft_id = int(run.stdout.strip().splitlines()[-1])

    draft = client.get(f"/v1/policies/versions/{draft_id}", headers=auth(legal)).json()
    assert draft["status"] == "draft" and draft["authors"] == ["cli:ops-anna"]
    entry = yaml.safe_load(draft["files"]["models.yaml"])["models"][MODEL]
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert entry["pins"][unet] == sha256_file(folder / unet)
    assert len(entry["pins"]) == 3  # unet, vae, text encoder: every weight file
    assert entry["source"] == {"kind": "pipeline_dir", "path": str(folder.resolve())}
    assert entry["licence"] == "apache-2.0" and entry["sizes"] == ["32x32", "64x64"]
    active = client.get("/v1/policies/versions/1", headers=auth(legal)).json()["files"]
    assert {k for k, v in draft["files"].items() if active.get(k) != v} == {"models.yaml"}
    assert "# Model registry" in draft["files"]["models.yaml"]  # comments are kept

    listed = CliRunner().invoke(cli, ["models", "list"], env=_env(runtime))
    line = next(x for x in listed.stdout.splitlines() if x.startswith(MODEL))
    assert f"registered: draft {draft_id}" in line and "approved: no" in line
    assert "3 files, match" in line

    # a draft is not in force: still refused
    assert _generate(client, requester, MODEL)[0] != 200
    r = client.post(f"/v1/policies/drafts/{draft_id}/submit", headers=auth(legal))
    assert r.status_code == 200, r.text
    r = client.post(f"/v1/policies/drafts/{draft_id}/approve", headers=auth(legal))
    assert r.status_code == 403 and r.json()["error"]["code"] == "four_eyes_required"
    r = client.post(f"/v1/policies/drafts/{draft_id}/approve", headers=auth(second))
    assert r.status_code == 200, r.text

    status, body = _generate(client, requester, MODEL)
    assert status == 200, body
    data = body["data"]
    assert isinstance(data, list)
    image = Image.open(io.BytesIO(base64.b64decode(data[0]["b64_json"])))
    assert image.size == (64, 64)
    listed = CliRunner().invoke(cli, ["models", "list"], env=_env(runtime))
    line = next(x for x in listed.stdout.splitlines() if x.startswith(MODEL))
    assert f"approved: yes (v{draft_id})" in line


def test_models_add_refuses_a_folder_that_does_not_load(
    runtime: Runtime, client: TestClient, make_key: KeyFactory, model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(model_dir / "demo-tiny", folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a tensor file")
    env = _env(runtime)
    run = CliRunner().invoke(
        cli, ["models", "add", MODEL, "--path", str(folder), "--licence", "apache-2.0"], env=env
    )
    assert run.exit_code == 2 and "does not load" in run.output
    unknown = CliRunner().invoke(
        cli,
        ["models", "add", MODEL, "--path", str(model_dir / "demo-tiny"), "--licence", "nope"],
        env=env,
    )
    assert unknown.exit_code != 0 and "nope" in unknown.output
    legal = make_key(Role.LEGAL_EDITOR)
    versions = client.get("/v1/policies/versions", headers=auth(legal)).json()
    assert [v["id"] for v in versions["data"]] == [1]  # no draft was opened


def test_with_model_replaces_one_entry_and_keeps_the_rest() -> None:
    text = (REPO / "policies" / "models.yaml").read_text(encoding="utf-8")
    entry = {
        "licence": "creativeml-openrail-m",
        "description": "Stable Diffusion 1.5 (diffusers folder layout).",
        "source": {"kind": "pipeline_dir", "path": "stable-diffusion-v1-5"},
        "pins": {"unet/x.safetensors": "a" * 64},
        "sizes": ["512x512"],
        "steps": {"min": 1, "max": 100, "default": 30},
        "options": {"dtype": "float16", "attention_slicing": True},
    }
    out = with_model(text, "stable-diffusion-v1-5/stable-diffusion-v1-5", entry)
    head, nxt = (
        "  stable-diffusion-v1-5/stable-diffusion-v1-5:",
        "\n  stabilityai/stable-diffusion-xl",
    )
    assert out[: out.index(head)] == text[: text.index(head)]  # everything before: as it was
    assert out[out.index(nxt) :] == text[text.index(nxt) :]  # everything after, comments too
    parsed = yaml.safe_load(out)["models"]
    assert parsed["stable-diffusion-v1-5/stable-diffusion-v1-5"] == entry
    assert list(parsed) == list(yaml.safe_load(text)["models"])  # order kept
    added = with_model(text, "new/model", entry)
    assert added.startswith(text.rstrip("\n")) and list(yaml.safe_load(added)["models"])[-1] == (
        "new/model"
    )
