"""The trainer alone: seeded runs reproduce, and a run stopped at a checkpoint resumes to the
same adapter as a run that never stopped."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.finetune.manifest import scan
from gateway.finetune.train import TrainConfig, TrainingCancelled, train_lora
from gateway.generation.loader import load_model
from gateway.generation.pins import sha256_file
from gateway.policy.bundle import load_bundle
from tests.conftest import REPO
from tests.finetune.helpers import make_images


def _train(model_dir: Path, images: Path, out: Path, stop_at: int | None = None) -> Path:
    entry = load_bundle(REPO / "policies").models.models["demo-tiny"]
    base = load_model("demo-tiny", entry, model_dir)
    samples = [
        (i.path, i.caption)
        for i in scan(images, rights="owned", rights_note=None, service=None).images
    ]
    config = TrainConfig(
        steps=4, rank=2, resolution=32, learning_rate=1e-2, seed=3, checkpoint_every=2
    )
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return stop_at is not None and calls["n"] > stop_at

    return train_lora(base.pipeline, samples, config, out, resume_key="k", should_stop=stop).adapter


def test_seeded_training_reproduces_and_resumes(model_dir: Path, tmp_path: Path) -> None:
    images = make_images(tmp_path / "images", count=4)
    straight = _train(model_dir, images, tmp_path / "a")
    again = _train(model_dir, images, tmp_path / "b")
    assert sha256_file(straight) == sha256_file(again)
    with pytest.raises(TrainingCancelled):
        _train(model_dir, images, tmp_path / "c", stop_at=3)  # stops before step 4
    assert (tmp_path / "c" / "checkpoint.pt").is_file()
    resumed = _train(model_dir, images, tmp_path / "c")
    assert sha256_file(resumed) == sha256_file(straight)
    assert not (tmp_path / "c" / "checkpoint.pt").exists()
