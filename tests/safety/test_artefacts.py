"""Every safety artefact is pinned; a missing or changed one makes its stage refuse (fail closed).

Real artefacts throughout: the shipped head, MiniLM, open_nsfw, a tiny open_clip folder;
HTTP through the app, decisions in SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from gateway.app import create_app
from gateway.auth.keys import create_key
from gateway.db.engine import unit_of_work
from gateway.domain import Role
from gateway.runtime import Models, Runtime, load_models
from gateway.safety.artefacts import (
    CLIP_FILES,
    ENCODER_FILES,
    ArtefactUnavailable,
    bundled_pins,
    folder_sha256,
    verify_folder,
)
from gateway.safety.image_nsfw import bundled_model_path
from gateway.safety.prompt_head import default_head_path
from gateway.safety.text_encoder import default_encoder_dir
from gateway.settings import Settings
from tests.conftest import REPO, auth
from tests.tiny_clip import build_tiny_clip, clip_pin

BLOCKED = "a soldier executing prisoners, war photography"
BODY = {"model": "demo-tiny", "prompt": "a lighthouse at dusk", "size": "64x64", "steps": 2}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def tampered_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("head") / "prompt_head.npz"
    shutil.copyfile(default_head_path(), path)
    _flip_byte(path)  # one byte changed
    return path


@pytest.fixture(scope="module")
def models_without_head(shared_data_dir: Path, tampered_head: Path) -> Models:
    """load_models as `gateway serve` runs it, with GATEWAY_PROMPT_HEAD at a changed file."""
    return load_models(
        Settings(data_dir=shared_data_dir, prompt_head=tampered_head, nsfw_detector=True)
    )


def _client(runtime: Runtime) -> tuple[TestClient, str]:
    with unit_of_work(runtime.sessions) as session:
        key = create_key(
            session, tenant="acme", roles=[Role.REQUESTER, Role.AUDITOR, Role.ADMIN]
        ).secret
    return TestClient(create_app(runtime.settings, runtime)), key


def _refused_and_recorded(
    client: TestClient, key: str, body: dict[str, Any], stage: str, artefact: str
) -> dict[str, Any]:
    r = client.post("/v1/images/generations", json=body, headers=auth(key))
    assert r.status_code == 503, r.text
    assert "data" not in r.json()
    err = r.json()["error"]
    assert err["code"] == "safety_system_unavailable"
    record = client.get(f"/v1/audit/decisions/{err['decision_id']}", headers=auth(key)).json()
    assert record["status"] == "closed"
    assert record["outcome"] == "safety_system_unavailable"
    assert record["errors"][0]["stage"] == stage
    assert artefact in record["errors"][0]["message"]
    assert "generator" not in record["timings_ms"]  # refused before anything ran
    return record


def test_bundled_pins_match_the_shipped_files() -> None:
    assert bundled_pins("prompt_head") == {"prompt_head.npz": _sha(default_head_path())}
    assert bundled_pins("open_nsfw") == {"open-nsfw.onnx": _sha(bundled_model_path())}
    encoder = bundled_pins("prompt_encoder")
    assert encoder["model.safetensors"] == (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    )
    _, actual = folder_sha256(default_encoder_dir(), ENCODER_FILES)
    assert actual == encoder


def test_shared_models_record_every_artefact(shared_models: Models) -> None:
    assert shared_models.problems == {}
    assert shared_models.artefacts["prompt_head"] == _sha(default_head_path())
    assert shared_models.artefacts["open_nsfw"] == _sha(bundled_model_path())
    combined, _ = folder_sha256(default_encoder_dir(), ENCODER_FILES)
    assert shared_models.artefacts["prompt_encoder"] == combined
    assert len(shared_models.artefacts["prompt_encoder_onnx"]) == 64


def test_changed_head_is_refused(models_without_head: Models, tampered_head: Path) -> None:
    assert models_without_head.head is None
    why = models_without_head.problems["prompt_head"]
    assert str(tampered_head) in why and _sha(tampered_head) in why and "pin" in why
    assert "prompt_head" not in models_without_head.artefacts
    # the other artefacts are still checked and loaded
    assert set(models_without_head.artefacts) >= {"prompt_encoder", "open_nsfw"}


def test_missing_head_and_operator_pins(shared_data_dir: Path, tmp_path: Path) -> None:
    missing = load_models(
        Settings(data_dir=shared_data_dir, prompt_head=tmp_path / "gone.npz", nsfw_detector=False)
    )
    assert "gone.npz is missing" in missing.problems["prompt_head"]
    # an operator's own head needs its own pin; with it, it loads and is recorded
    own = tmp_path / "own.npz"
    shutil.copyfile(default_head_path(), own)
    _flip_byte(own, 0.999)  # a retrained head, say: another file than the shipped one
    unpinned = load_models(Settings(data_dir=shared_data_dir, prompt_head=own, nsfw_detector=False))
    assert _sha(own) in unpinned.problems["prompt_head"]
    assert "GATEWAY_PROMPT_HEAD_SHA256" in unpinned.problems["prompt_head"]


def test_folder_pins_name_the_changed_file(tmp_path: Path, clip_dir: Path) -> None:
    folder = tmp_path / "clip"
    shutil.copytree(clip_dir, folder)
    pin = clip_pin(folder)
    ok = verify_folder("clip", folder, CLIP_FILES, pins={}, combined=pin, setting="S")
    assert ok.sha256 == pin and set(ok.files) == {
        "open_clip_config.json",
        "open_clip_model.safetensors",
    }
    with pytest.raises(ArtefactUnavailable, match="no sha256 pin; set S"):
        verify_folder("clip", folder, CLIP_FILES, pins={}, combined=None, setting="S")
    (folder / "extra.bin").write_bytes(b"swapped in")
    with pytest.raises(ArtefactUnavailable, match=r"extra\.bin.*but S pins"):
        verify_folder("clip", folder, CLIP_FILES, pins={}, combined=pin, setting="S")
    pins = dict(ok.files)
    with pytest.raises(ArtefactUnavailable, match=r"extra\.bin has no sha256 pin"):
        verify_folder("clip", folder, CLIP_FILES, pins=pins, combined=None, setting="S")
    (folder / "extra.bin").unlink()
    _flip_byte(folder / "open_clip_config.json", 0.1)
    with pytest.raises(ArtefactUnavailable, match=r"open_clip_config\.json has sha256"):
        verify_folder("clip", folder, CLIP_FILES, pins=pins, combined=None, setting="S")


def test_changed_head_makes_every_prompt_route_refuse(
    runtime_factory: Callable[..., Runtime], models_without_head: Models
) -> None:
    runtime = runtime_factory(models=models_without_head)
    client, key = _client(runtime)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert "prompt_head" in checks["safety"]["prompt_classifier"]
    assert "sha256" in checks["artefacts"]["prompt_head"]["error"]
    assert checks["safety"]["image_classifier"] == "ok"
    # a prompt that is blocked normally is not judged by a weaker classifier: it is refused
    record = _refused_and_recorded(
        client, key, {**BODY, "prompt": BLOCKED}, "prompt_classifier", "prompt_head"
    )
    assert "prompt" not in record and "classifiers" not in record
    r = client.post("/v1/moderations", json={"input": BLOCKED}, headers=auth(key))
    assert r.status_code == 503 and r.json()["error"]["code"] == "safety_system_unavailable"
    assert "prompt_head" in r.json()["error"]["message"]
    r = client.post(
        "/v1/policy/evaluate",
        json={"model": "demo-tiny", "intended_use": "research", "prompt": BLOCKED},
        headers=auth(key),
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "safety_system_unavailable"
    # the licence check alone needs no classifier
    r = client.post(
        "/v1/policy/evaluate",
        json={"model": "demo-tiny", "intended_use": "research"},
        headers=auth(key),
    )
    assert r.status_code == 200, r.text


def _png_data_url() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 120, 200)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_changed_clip_weights_make_the_image_stage_refuse(
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    clip_dir: Path,
) -> None:
    folder = tmp_path / "clip"
    shutil.copytree(clip_dir, folder)
    pin = clip_pin(folder)
    _flip_byte(folder / "open_clip_model.safetensors")
    runtime = runtime_factory(settings_factory(clip_dir=folder, clip_sha256=pin))
    client, key = _client(runtime)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "clip" in ready.json()["checks"]["artefacts"]
    assert pin in ready.json()["checks"]["artefacts"]["clip"]["error"]
    _refused_and_recorded(client, key, BODY, "image_classifier", "clip")
    # no fallback to open_nsfw alone for images; text moderation needs no image artefact
    r = client.post(
        "/v1/moderations",
        json={"input": [{"type": "image_url", "image_url": {"url": _png_data_url()}}]},
        headers=auth(key),
    )
    assert r.status_code == 503 and "clip" in r.json()["error"]["message"]
    r = client.post("/v1/moderations", json={"input": "a bowl of fruit"}, headers=auth(key))
    assert r.status_code == 200, r.text


def test_unpinned_clip_folder_is_unavailable(
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
    clip_dir: Path,
) -> None:
    runtime = runtime_factory(settings_factory(clip_dir=clip_dir))
    ready = TestClient(create_app(runtime.settings, runtime)).get("/readyz")
    assert ready.status_code == 503
    assert "GATEWAY_CLIP_SHA256" in ready.json()["checks"]["artefacts"]["clip"]["error"]


def test_decision_records_every_classifier_artefact(
    runtime_factory: Callable[..., Runtime],
    settings_factory: Callable[..., Settings],
    shared_models: Models,
    clip_dir: Path,
) -> None:
    pin = clip_pin(clip_dir)
    runtime = runtime_factory(settings_factory(clip_dir=clip_dir, clip_sha256=pin))
    client, key = _client(runtime)
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["artefacts"]["clip"] == {"sha256": pin}
    r = client.post("/v1/images/generations", json=BODY, headers=auth(key))
    assert r.status_code == 200, r.text
    expected = {**shared_models.artefacts, "clip": pin}
    assert set(expected) == {
        "prompt_head",
        "prompt_encoder",
        "prompt_encoder_onnx",
        "open_nsfw",
        "clip",
    }
    governance = r.json()["governance"]
    assert governance["classifiers"] == expected
    record = client.get(
        f"/v1/audit/decisions/{governance['decision_id']}", headers=auth(key)
    ).json()
    assert record["classifiers"] == expected
    # a prompt refused by the prompt stage was judged by the prompt artefacts only
    r = client.post("/v1/images/generations", json={**BODY, "prompt": BLOCKED}, headers=auth(key))
    assert r.status_code == 400, r.text
    refused = client.get(
        f"/v1/audit/decisions/{r.json()['error']['decision_id']}", headers=auth(key)
    ).json()
    assert refused["classifiers"] == {k: v for k, v in expected.items() if k.startswith("prompt_")}
    r = client.post("/v1/moderations", json={"input": BLOCKED}, headers=auth(key))
    assert r.status_code == 200 and r.json()["results"][0]["flagged"] is True
    assert r.json()["classifiers"] == refused["classifiers"]


def test_settings_reject_a_malformed_pin() -> None:
    with pytest.raises(ValueError, match="clip_sha256"):
        Settings(clip_sha256="abc", policy_dir=REPO / "policies")
