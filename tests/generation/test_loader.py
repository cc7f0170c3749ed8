"""Weights are checked against their sha256 pins before any load; mismatches name the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gateway.generation.loader import ModelUnavailable, check_weights, load_model
from gateway.generation.models import ModelManager
from gateway.generation.pins import MANIFEST_NAME, hash_weight_files
from gateway.generation.run import GenerationParams, run_pipeline
from gateway.policy.schema import ModelEntry, ModelRegistry


def _entry(path: str, pins: dict[str, str] | str) -> ModelEntry:
    return ModelEntry.model_validate(
        {
            "licence": "apache-2.0",
            "source": {"kind": "pipeline_dir", "path": path},
            "pins": pins,
            "sizes": ["64x64"],
            "steps": {"min": 1, "max": 4, "default": 2},
        }
    )


@pytest.fixture
def pipeline_copy(model_dir: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "models" / "copy"
    shutil.copytree(model_dir / "demo-tiny", dest)
    (dest / MANIFEST_NAME).unlink()
    return dest


def test_explicit_pins_load_and_generate(pipeline_copy: Path) -> None:
    pins = hash_weight_files(pipeline_copy)
    assert set(pins) == {
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
    }
    loaded = load_model("copy", _entry("copy", pins), pipeline_copy.parent)
    images = run_pipeline(loaded, GenerationParams("a cat", None, 2, 64, 64, 2, 1))
    assert [im.size for im in images] == [(64, 64), (64, 64)]


def test_modified_weight_file_is_refused_naming_it(pipeline_copy: Path) -> None:
    pins = hash_weight_files(pipeline_copy)
    weights = pipeline_copy / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ModelUnavailable, match=r"vae/diffusion_pytorch_model\.safetensors"):
        check_weights("copy", _entry("copy", pins), pipeline_copy.parent)


def test_unpinned_extra_weight_file_is_refused(pipeline_copy: Path) -> None:
    pins = hash_weight_files(pipeline_copy)
    (pipeline_copy / "unet" / "extra.bin").write_bytes(b"sneaky")
    with pytest.raises(ModelUnavailable, match=r"unet/extra.bin .* has no sha256 pin"):
        check_weights("copy", _entry("copy", pins), pipeline_copy.parent)


def test_no_pins_means_unavailable(pipeline_copy: Path) -> None:
    with pytest.raises(ModelUnavailable, match="no sha256 pins"):
        check_weights("copy", _entry("copy", {}), pipeline_copy.parent)


def test_manager_reports_unavailable_models_with_reason(
    model_dir: Path, pipeline_copy: Path
) -> None:
    pins = hash_weight_files(pipeline_copy)
    bad = dict(pins)
    bad["text_encoder/model.safetensors"] = "0" * 64
    registry = ModelRegistry.model_validate(
        {
            "schema_version": 1,
            "models": {
                "good": _entry("copy", pins).model_dump(),
                "tampered": _entry("copy", bad).model_dump(),
                "absent": _entry("nowhere", pins).model_dump(),
            },
        }
    )
    manager = ModelManager(registry, pipeline_copy.parent)
    manager.prepare()
    assert manager.status("good").available
    assert "text_encoder/model.safetensors" in (manager.status("tampered").reason or "")
    assert "not installed" in (manager.status("absent").reason or "")
    with pytest.raises(ModelUnavailable):
        manager.get("tampered")


def test_demo_tiny_manifest_is_checked(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "demo"
    shutil.copytree(model_dir / "demo-tiny", copy)
    entry = ModelEntry.model_validate(
        {
            "licence": "apache-2.0",
            "source": {"kind": "demo_tiny", "path": str(copy)},
            "pins": "manifest",
            "sizes": ["64x64"],
            "steps": {"min": 1, "max": 4, "default": 2},
        }
    )
    digest = check_weights("demo-tiny", entry, tmp_path)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["files"]["unet/diffusion_pytorch_model.safetensors"] = "f" * 64
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ModelUnavailable, match=r"unet/diffusion_pytorch_model\.safetensors"):
        check_weights("demo-tiny", entry, tmp_path)
    assert len(digest) == 64
