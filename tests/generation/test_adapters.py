"""Switching LoRA adapters over one loaded base: each call gets exactly the adapter it names
(or none), the base is never reloaded, and a file that does not match its pin is refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gateway.finetune.manifest import scan
from gateway.finetune.train import TrainConfig, train_lora
from gateway.generation.adapters import AdapterRef, AdapterUnavailable, activate_adapter
from gateway.generation.loader import load_model
from gateway.generation.pins import sha256_file
from gateway.generation.run import GenerationParams, run_pipeline
from gateway.policy.bundle import load_bundle
from tests.conftest import REPO
from tests.finetune.helpers import make_images


def test_adapters_switch_over_one_base(model_dir: Path, tmp_path: Path) -> None:
    entry = load_bundle(REPO / "policies").models.models["demo-tiny"]
    images = make_images(tmp_path / "images", count=4)
    samples = [(i.path, i.caption) for i in scan(images, rights="owned", rights_note=None,
                                                 service=None).images]  # fmt: skip
    refs = []
    for seed in (1, 2):
        trainee = load_model("demo-tiny", entry, model_dir)
        config = TrainConfig(steps=3, rank=2, resolution=32, learning_rate=5e-2, seed=seed)
        out = train_lora(trainee.pipeline, samples, config, tmp_path / f"a{seed}", resume_key="k")
        refs.append(AdapterRef(f"lora-{seed}", out.adapter, sha256_file(out.adapter)))

    base = load_model("demo-tiny", entry, model_dir)
    unet = base.pipeline.unet
    params = GenerationParams("a red circle", None, 1, 64, 64, 2, 5)

    def render(ref: AdapterRef | None) -> np.ndarray:
        # as served: the adapter's LoadedModel shares the base's pipeline; run_pipeline
        # activates its adapter (or, for the base, none) before calling it
        model = replace(base, model_id=ref.model_id if ref else "demo-tiny", adapter=ref)
        return np.asarray(run_pipeline(model, params)[0], dtype=np.int16)

    plain, a, b = render(None), render(refs[0]), render(refs[1])
    assert np.abs(a - plain).max() > 0 and np.abs(b - plain).max() > 0
    assert np.abs(a - b).max() > 0
    assert np.array_equal(render(refs[0]), a)  # back to A: exactly A, not A+B
    assert np.array_equal(render(None), plain)  # and off again
    assert base.pipeline.unet is unet  # the base was never reloaded

    changed = AdapterRef("lora-x", refs[0].path, "0" * 64)  # a pin the file does not match
    with pytest.raises(AdapterUnavailable, match="sha256"):
        activate_adapter(base.pipeline, changed)
