"""The batcher's scheduling: merging by key, max_wait, oldest first, failures, drops, the bound.

The runner here records which jobs ran together and returns one small image per seed; the
scheduling under test is the real :class:`Batcher`. The real pipeline is exercised in
``test_batched_pipeline.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from PIL import Image

from gateway.domain import ImageScores
from gateway.generation.batching import (
    Batcher,
    BatchKey,
    ImageJob,
    JobDropped,
    QueueFull,
    image_seeds,
)
from gateway.generation.models import ModelManager
from gateway.policy.bundle import load_bundle
from tests.conftest import REPO, hold_owner

KEY_A = BatchKey("m", 64, 64, 4, 7.5, "DDIMScheduler", "float32")
KEY_B = BatchKey("m", 128, 128, 4, 7.5, "DDIMScheduler", "float32")


class Recorder:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, key: BatchKey, jobs: Sequence[ImageJob]) -> list[list[Image.Image]]:
        self.calls.append([j.prompt for j in jobs])
        if self.fail_on is not None and any(j.prompt == self.fail_on for j in jobs):
            raise RuntimeError(f"bad prompt {self.fail_on}")
        return [[Image.new("RGB", (key.width, key.height), s % 256) for s in j.seeds] for j in jobs]


def job(key: BatchKey, prompt: str, n: int = 1, *, deadline_s: float = 30.0) -> ImageJob:
    return ImageJob(key, prompt, None, image_seeds(1, n), time.monotonic() + deadline_s)


@pytest.fixture
def make_batcher() -> Iterator[type[Batcher]]:
    made: list[Batcher] = []

    class Tracked(Batcher):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    yield Tracked
    for b in made:
        b.stop()


def test_merges_by_key_oldest_first_up_to_max_batch(make_batcher: type[Batcher]) -> None:
    runner = Recorder()
    b = make_batcher("m", max_batch=3, max_wait_s=0.0, max_waiting_images=32)
    b.set_runner(runner)
    release = hold_owner(b)
    futures = [
        b.submit(job(KEY_A, "a1")),
        b.submit(job(KEY_B, "b1")),
        b.submit(job(KEY_A, "a2", n=2)),
        b.submit(job(KEY_A, "a3")),  # would make 4 images: waits for the next batch
    ]
    assert b.waiting_images() == 5
    release.set()
    outs = [f.result(10) for f in futures]
    # a1 is oldest, so its key goes first with a2; then b1 (older than a3): nothing starves
    assert runner.calls == [["a1", "a2"], ["b1"], ["a3"]]
    assert outs[0].batch.id == outs[2].batch.id != outs[1].batch.id
    assert outs[0].batch.size == 3 and outs[1].batch.size == 1
    assert [len(o.images) for o in outs] == [1, 1, 2, 1]
    assert b.waiting_images() == 0


def test_max_wait_gathers_late_jobs_then_fires(make_batcher: type[Batcher]) -> None:
    runner = Recorder()
    b = make_batcher("m", max_batch=8, max_wait_s=0.5, max_waiting_images=32)
    b.set_runner(runner)
    first = b.submit(job(KEY_A, "first"))
    time.sleep(0.1)
    second = b.submit(job(KEY_A, "second"))
    out1, out2 = first.result(10), second.result(10)
    assert runner.calls == [["first", "second"]]
    assert out1.batch.id == out2.batch.id and out1.batch.size == 2
    assert out1.batch.queue_wait_ms >= 450  # waited for company, no longer than max_wait
    assert out1.batch.queue_wait_ms < 5000


def test_a_lone_request_does_not_wait_for_company(make_batcher: type[Batcher]) -> None:
    """Every request in flight already waiting: nobody can join, so the batch starts at once;
    while another request is in flight it waits for it (up to max_wait), as before."""
    runner = Recorder()
    b = make_batcher("m", max_batch=8, max_wait_s=5.0, max_waiting_images=32)
    b.set_runner(runner)
    lone = job(KEY_A, "lone")
    lone.tracked = True
    with b.request():
        out = b.submit(lone).result(10)
    assert out.batch.queue_wait_ms < 1000  # not the 5 s max_wait

    first, second = job(KEY_A, "first"), job(KEY_A, "second")
    first.tracked = second.tracked = True
    with b.request(), b.request():  # two requests in flight, one of them still classifying
        early = b.submit(first)
        time.sleep(0.3)
        assert not early.done()  # waits for the other request in flight
        late = b.submit(second)
        out1, out2 = early.result(10), late.result(10)
    assert out1.batch.id == out2.batch.id and out1.batch.size == 2
    assert 250 <= out1.batch.queue_wait_ms < 4000
    assert runner.calls == [["lone"], ["first", "second"]]


def test_full_batch_does_not_wait(make_batcher: type[Batcher]) -> None:
    runner = Recorder()
    b = make_batcher("m", max_batch=2, max_wait_s=30.0, max_waiting_images=32)
    b.set_runner(runner)
    out = b.submit(job(KEY_A, "pair", n=2)).result(10)
    assert out.batch.queue_wait_ms < 10_000


def test_failing_batch_is_retried_job_by_job(make_batcher: type[Batcher]) -> None:
    runner = Recorder(fail_on="bad")
    b = make_batcher("m", max_batch=8, max_wait_s=0.0, max_waiting_images=32)
    b.set_runner(runner)
    release = hold_owner(b)
    good1, bad, good2 = (b.submit(job(KEY_A, p)) for p in ("g1", "bad", "g2"))
    release.set()
    assert len(good1.result(10).images) == 1
    assert len(good2.result(10).images) == 1
    with pytest.raises(RuntimeError, match="bad prompt"):
        bad.result(10)
    assert runner.calls == [["g1", "bad", "g2"], ["g1"], ["bad"], ["g2"]]
    assert good1.result().batch.size == 1  # its images came from the retry


def test_expired_and_cancelled_jobs_are_dropped_before_running(
    make_batcher: type[Batcher],
) -> None:
    runner = Recorder()
    b = make_batcher("m", max_batch=8, max_wait_s=0.0, max_waiting_images=32)
    b.set_runner(runner)
    release = hold_owner(b)
    expired = b.submit(job(KEY_A, "late", deadline_s=0.05))
    gone = job(KEY_A, "gone")
    cancelled = b.submit(gone)
    kept = b.submit(job(KEY_A, "kept"))
    gone.cancelled.set()  # its client went away
    time.sleep(0.2)
    release.set()
    with pytest.raises(JobDropped, match="deadline"):
        expired.result(10)
    with pytest.raises(JobDropped, match="cancelled"):
        cancelled.result(10)
    assert kept.result(10).batch.size == 1
    assert runner.calls == [["kept"]]


def test_cancel_frees_the_bound_at_once_and_the_job_never_runs(
    make_batcher: type[Batcher],
) -> None:
    runner = Recorder()
    b = make_batcher("m", max_batch=8, max_wait_s=0.0, max_waiting_images=3)
    b.set_runner(runner)
    release = hold_owner(b)
    try:
        gone = job(KEY_A, "gone", n=3)
        future = b.submit(gone)
        with pytest.raises(QueueFull):
            b.submit(job(KEY_A, "waits"))
        assert b.cancel(gone, "the client disconnected")
        assert b.waiting_images() == 0  # while the owner thread is still busy
        with pytest.raises(JobDropped, match="the client disconnected"):
            future.result(0)
        after = b.submit(job(KEY_A, "fits now", n=3))
        assert not b.cancel(gone)  # no longer waiting
    finally:
        release.set()
    assert after.result(10).batch.size == 3
    assert runner.calls == [["fits now"]]
    assert not b.cancel(job(KEY_A, "never queued"))


def test_queue_bound_counts_images(make_batcher: type[Batcher]) -> None:
    b = make_batcher("m", max_batch=8, max_wait_s=0.0, max_waiting_images=4)
    b.set_runner(Recorder())
    release = hold_owner(b)
    try:
        b.submit(job(KEY_A, "three", n=3))
        with pytest.raises(QueueFull):
            b.submit(job(KEY_A, "two", n=2))
        b.submit(job(KEY_A, "one"))
        assert b.waiting_images() == 4
        with pytest.raises(QueueFull):
            b.submit(job(KEY_A, "another"))
    finally:
        release.set()


def test_jobs_with_and_without_negative_prompt_run_apart(make_batcher: type[Batcher]) -> None:
    runner = Recorder()
    b = make_batcher("m", max_batch=8, max_wait_s=0.0, max_waiting_images=32)
    b.set_runner(runner)
    release = hold_owner(b)
    plain = b.submit(job(KEY_A, "plain"))
    neg = ImageJob(KEY_A, "neg", "blurry", (5,), time.monotonic() + 30)
    with_neg = b.submit(neg)
    release.set()
    plain.result(10), with_neg.result(10)
    assert runner.calls == [["plain"], ["neg"]]


def test_image_seeds_follow_the_request_seed() -> None:
    assert image_seeds(41, 3) == (41, 42, 43)
    assert image_seeds(2**63 - 1, 2) == (2**63 - 1, 0)


def test_compile_warms_every_declared_size_and_batch_size() -> None:
    from gateway.generation.warmup import warmup_plan
    from gateway.policy.schema import ModelEntry

    entry = {
        "licence": "apache-2.0",
        "source": {"kind": "pipeline_dir", "path": "m"},
        "sizes": ["512x512", "768x512"],
        "steps": {"min": 1, "max": 50, "default": 20},
    }
    plain = ModelEntry.model_validate(entry)
    assert plain.options.compile is False and plain.options.max_batch is None
    assert warmup_plan(plain, 4) == [(512, 512, 1)]
    compiled = ModelEntry.model_validate({**entry, "options": {"compile": True, "max_batch": 3}})
    assert warmup_plan(compiled, 3) == [
        (512, 512, 1), (512, 512, 2), (512, 512, 3), (768, 512, 1), (768, 512, 2), (768, 512, 3)
    ]  # fmt: skip
    with pytest.raises(ValueError, match="max_batch"):
        ModelEntry.model_validate({**entry, "options": {"max_batch": 0}})


class SlowScorer:
    """Scores after a pause (an image classifier busy with the previous batch)."""

    def __init__(self, pause_s: float) -> None:
        self.pause_s = pause_s

    def classify(self, images: Sequence[Image.Image]) -> list[ImageScores]:
        time.sleep(self.pause_s)
        return [ImageScores(scores={}, detectors={}) for _ in images]


def scored_job(prompt: str, scorer: SlowScorer) -> ImageJob:
    return ImageJob(KEY_A, prompt, None, (1,), time.monotonic() + 30, scorer=scorer)


def test_stopping_still_scores_batches_already_generated(make_batcher: type[Batcher]) -> None:
    """A request whose images were generated gets its scores even when the batcher stops
    meanwhile (a policy switch retiring the old models): never a wait ending in a timeout."""
    b = make_batcher("m", max_batch=1, max_wait_s=0.0, max_waiting_images=8)
    b.set_runner(Recorder())
    scorer = SlowScorer(0.3)
    first = b.submit(scored_job("a1", scorer)).result(10)
    second = b.submit(scored_job("a2", scorer)).result(10)
    b.stop()  # the second batch's scoring is still queued behind the first's
    for out in (first, second):
        scored = out.scored.result(10)
        assert scored.error is None and scored.scores is not None and len(scored.scores) == 1


def test_a_load_that_raises_leaves_no_owner_thread(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path
) -> None:
    """A load that fails with anything but ModelUnavailable (a CUDA out-of-memory error, say)
    propagates, and the owner thread made for the model is stopped, not leaked."""
    import gateway.generation.models as models_module

    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(models_module, "load_model", out_of_memory)
    registry = load_bundle(REPO / "policies").models
    before = {t.name for t in threading.enumerate() if t.name.startswith("owner-")}
    manager = ModelManager(registry, model_dir)
    with pytest.raises(RuntimeError, match="out of memory"):
        manager.prepare()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        owners = {t.name for t in threading.enumerate() if t.name.startswith("owner-")}
        if owners <= before:
            break
        time.sleep(0.05)
    assert owners <= before, owners
