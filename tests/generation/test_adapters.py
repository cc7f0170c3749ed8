"""Switching LoRA adapters over one loaded base: each call gets exactly the adapter it names
(or none), the base is never reloaded, and a file that does not match its pin is refused."""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from gateway.finetune.manifest import scan
from gateway.finetune.train import TrainConfig, train_lora
from gateway.generation.adapters import AdapterRef, AdapterUnavailable, activate_adapter
from gateway.generation.batching import Batcher, ImageJob
from gateway.generation.loader import load_model
from gateway.generation.pins import sha256_file
from gateway.generation.run import GenerationParams, batch_key, run_batch, run_pipeline
from gateway.policy.bundle import load_bundle
from tests.conftest import REPO, hold_owner
from tests.finetune.helpers import make_images

ENTRY = load_bundle(REPO / "policies").models.models["demo-tiny"]


@pytest.fixture(scope="module")
def refs(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[AdapterRef]:
    """Two small adapters trained over demo-tiny with different seeds."""
    tmp_path = tmp_path_factory.mktemp("adapters")
    images = make_images(tmp_path / "images", count=4)
    samples = [(i.path, i.caption) for i in scan(images, rights="owned", rights_note=None,
                                                 service=None).images]  # fmt: skip
    out_refs = []
    for seed in (1, 2):
        trainee = load_model("demo-tiny", ENTRY, model_dir)
        config = TrainConfig(steps=3, rank=2, resolution=32, learning_rate=5e-2, seed=seed)
        out = train_lora(trainee.pipeline, samples, config, tmp_path / f"a{seed}", resume_key="k")
        out_refs.append(AdapterRef(f"lora-{seed}", out.adapter, sha256_file(out.adapter)))
    return out_refs


def test_adapters_switch_over_one_base(model_dir: Path, refs: list[AdapterRef]) -> None:
    base = load_model("demo-tiny", ENTRY, model_dir)
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


def test_an_adapter_shares_no_batch_with_other_adapters(
    model_dir: Path, refs: list[AdapterRef]
) -> None:
    """Requests for adapter A, adapter B and the bare base wait together on the base's owner
    thread: each pipeline call holds one adapter's requests only (or the base's), and each
    image is the one its own adapter gives alone (so the right adapter was active)."""
    import torch

    base = load_model("demo-tiny", ENTRY, model_dir)
    models = {
        None: base,
        **{r.model_id: replace(base, model_id=r.model_id, adapter=r, base=base) for r in refs},
    }
    batcher = Batcher("demo-tiny", max_batch=8, max_wait_s=0.0, max_waiting_images=16)
    batcher.set_runner(partial(run_batch, base))
    with torch.backends.mkldnn.flags(enabled=False):  # batch-invariant pixels on a CPU
        try:
            release = hold_owner(batcher)
            order = ["lora-1", "lora-2", None, "lora-1", "lora-2", None]
            futures = []
            for i, name in enumerate(order):
                key = batch_key(models[name], 64, 64, 2)
                assert key.model == "demo-tiny" and key.adapter == models[name].adapter
                job = ImageJob(key, "a red circle", None, (5 + i,), time.monotonic() + 120)
                futures.append(batcher.submit(job))
            release.set()
            outs = [f.result(120) for f in futures]
            plain = np.asarray(
                run_pipeline(base, GenerationParams("a red circle", None, 1, 64, 64, 2, 5))[0],
                dtype=np.int16,
            )
            alone = {
                (name, i): np.asarray(
                    run_pipeline(
                        models[name], GenerationParams("a red circle", None, 1, 64, 64, 2, 5 + i)
                    )[0],
                    dtype=np.int16,
                )
                for i, name in enumerate(order)
            }
        finally:
            batcher.stop()

    batch_of = {i: outs[i].batch.id for i in range(len(order))}
    for i, name in enumerate(order):
        same = {j for j, other in enumerate(order) if other == name}
        assert {j for j in batch_of if batch_of[j] == batch_of[i]} == same, (name, batch_of)
        assert outs[i].batch.size == 2
        # equal to its adapter's image alone, up to float rounding that differs by batch size
        # (a few pixels by one level of 255)
        diff = np.abs(np.asarray(outs[i].images[0], dtype=np.int16) - alone[(name, i)])
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (name, diff.max())
    assert len(set(batch_of.values())) == 3
    # far beyond that rounding, the adapter changed the picture inside its batch
    lora_1 = np.asarray(outs[0].images[0], dtype=np.int16)  # lora-1, seed 5
    assert np.abs(lora_1 - plain).max() > 8
