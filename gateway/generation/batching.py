"""Dynamic batching in front of one pipeline, on the thread that owns it.

Each loaded pipeline has one :class:`Batcher`. Its owner thread is the only thread that runs
torch for that pipeline: loading, warm-up (:meth:`Batcher.call`) and generation. Requests put
*data* on its queue (:class:`ImageJob`: the batch key, prompts, per-image seeds, a deadline and
a cancellation flag); the owner thread merges jobs that share a :class:`BatchKey` into one
pipeline call:

- the oldest waiting job always goes next, with the younger jobs of its key behind it, up to
  ``max_batch`` images, or once ``max_wait_s`` has passed since it was queued (so a rare key
  never starves and a lone request waits at most ``max_wait_s``), or at once when every request
  in flight for the pipeline is already waiting (:meth:`Batcher.request`);
- a job whose deadline has passed or that was cancelled (its request gave up waiting, or its
  client disconnected: :meth:`Batcher.cancel`) is dropped before it runs, and stops counting
  toward the waiting bound at once;
- a batch that fails is run again one job at a time, so one bad request fails alone;
- the waiting bound counts images, not requests (:class:`QueueFull` → 429).

Finished batches go to a second thread, which scores all the batch's images with the image
classifier in one call and then completes each job's future; the owner thread goes straight
on to the next batch.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from PIL import Image

from gateway.generation.adapters import AdapterRef
from gateway.generation.scoring import ImageScorer, Scored, score_batch

log = logging.getLogger(__name__)

T = TypeVar("T")
SEED_MODULUS = 2**63


class QueueFull(Exception):
    """More images are waiting for this model than the bound allows."""


class JobDropped(Exception):
    """The job was not run: its deadline passed, it was cancelled, or the batcher stopped."""


@dataclass(frozen=True)
class BatchKey:
    """Jobs merge into one pipeline call only when every field is equal (exact, never rounded)."""

    model: str
    width: int
    height: int
    steps: int
    guidance: float
    scheduler: str
    dtype: str
    adapter: AdapterRef | None = None  # a LoRA over the base: one adapter per call, or none


def image_seeds(seed: int, n: int) -> tuple[int, ...]:
    """Image ``i`` of a request with seed ``s`` is generated from seed ``s + i``.

    So image ``i`` is the same picture as image 0 of a request with seed ``s + i``, whether
    it ran alone or inside a batch with other requests' images.
    """
    return tuple((seed + i) % SEED_MODULUS for i in range(n))


@dataclass(eq=False)
class ImageJob:
    key: BatchKey
    prompt: str
    negative_prompt: str | None
    seeds: tuple[int, ...]
    deadline: float  # time.monotonic()
    scorer: ImageScorer | None = None  # the image classifier of the request's policy version
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.monotonic)
    tracked: bool = False  # its request is counted by Batcher.request() while in flight

    @property
    def n(self) -> int:
        return len(self.seeds)

    def merges_with(self, other: ImageJob) -> bool:
        # a missing negative prompt is not always the same as "" (SDXL zeroes the embedding)
        return self.key == other.key and (self.negative_prompt is None) == (
            other.negative_prompt is None
        )


@dataclass(frozen=True)
class BatchInfo:
    id: str
    size: int  # images in the pipeline call
    queue_wait_ms: float  # this job: queued → its batch started
    generator_ms: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "size": self.size,
            "queue_wait_ms": self.queue_wait_ms,
            "generator_ms": self.generator_ms,
        }


@dataclass(frozen=True)
class JobOutput:
    images: list[Image.Image]
    batch: BatchInfo
    scored: Future[Scored]  # completed off the owner thread, once the batch is scored


RunBatch = Callable[[BatchKey, Sequence[ImageJob]], list[list[Image.Image]]]


@dataclass(eq=False)
class _Pending:
    job: ImageJob
    future: Future[JobOutput]


class Batcher:
    def __init__(
        self,
        name: str,
        *,
        max_batch: int,
        max_wait_s: float,
        max_waiting_images: int,
        torch_threads: int | None = None,
    ) -> None:
        if max_batch < 1 or max_waiting_images < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_waiting_images must be >= 1, max_wait_s >= 0")
        self.name = name
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_waiting_images = max_waiting_images
        self._torch_threads = torch_threads
        self._run_batch: RunBatch | None = None
        self._cond = threading.Condition()
        self._pending: deque[_Pending] = deque()  # arrival order = oldest first
        self._waiting_images = 0
        self._requests = 0  # requests in flight for this pipeline (Batcher.request)
        self._control: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"owner-{name}", daemon=True)
        self._post = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"post-{name}")
        self.ready = threading.Event()  # set once warm-up is done
        self._thread.start()

    # -- the interface ----------------------------------------------------------------------
    def set_runner(self, run_batch: RunBatch) -> None:
        self._run_batch = run_batch

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the owner thread (loading, warm-up), ahead of waiting jobs."""
        future: Future[T] = Future()
        with self._cond:
            if self._stopping:
                raise JobDropped(f"{self.name}: the batcher has stopped")
            self._control.append((fn, future))
            self._cond.notify_all()
        return future

    def submit(self, job: ImageJob) -> Future[JobOutput]:
        future: Future[JobOutput] = Future()
        with self._cond:
            if self._stopping:
                raise JobDropped(f"{self.name}: the batcher has stopped")
            if self._waiting_images + job.n > self.max_waiting_images:
                raise QueueFull(f"{self.name}: {self._waiting_images} images waiting")
            self._pending.append(_Pending(job, future))
            self._waiting_images += job.n
            self._cond.notify_all()
        return future

    @contextmanager
    def request(self) -> Iterator[None]:
        """Count a request as in flight for this pipeline, from before its prompt is classified
        until its images are delivered. When every request in flight already has its tracked
        job waiting, nobody else can join the batch, so it starts without waiting out
        ``max_wait_s`` (a lone request does not pay the wait for company)."""
        with self._cond:
            self._requests += 1
        try:
            yield
        finally:
            with self._cond:
                self._requests -= 1
                self._cond.notify_all()

    def cancel(self, job: ImageJob, reason: str = "cancelled") -> bool:
        """Take ``job`` off the queue now, if it has not started: its future fails with
        :class:`JobDropped` and its images stop counting toward the bound at once (not when
        the owner thread next looks). Returns whether it was still waiting. A job already in
        a batch that is about to run is still skipped (its ``cancelled`` flag is set)."""
        job.cancelled.set()
        with self._cond:
            found = next((p for p in self._pending if p.job is job), None)
            if found is None:
                return False
            self._pending.remove(found)
            self._waiting_images -= job.n
            self._cond.notify_all()
        if found.future.set_running_or_notify_cancel():
            found.future.set_exception(JobDropped(f"dropped before it ran: {reason}"))
        return True

    def waiting_images(self) -> int:
        """Images queued and not yet started (for the queue-depth gauge)."""
        with self._cond:
            return self._waiting_images

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            dropped = list(self._pending)
            self._pending.clear()
            self._waiting_images = 0
            self._cond.notify_all()
        for p in dropped:
            if p.future.set_running_or_notify_cancel():
                p.future.set_exception(JobDropped("the gateway is stopping"))
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        # batches already generated are still scored (their requests are waiting for it)
        self._post.shutdown(wait=False, cancel_futures=False)

    # -- the owner thread -------------------------------------------------------------------
    def _loop(self) -> None:
        if self._torch_threads:
            import torch

            torch.set_num_threads(self._torch_threads)
        while True:
            with self._cond:
                task, batch = self._next()
                if task is None and batch is None:
                    return
            if task is not None:
                fn, future = task
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:  # the caller decides what it means
                        future.set_exception(exc)
            elif batch:
                self._dispatch(batch)

    def _next(self) -> tuple[tuple[Callable[[], Any], Future[Any]] | None, list[_Pending] | None]:
        """Under the lock: a control task, a batch to run, or (None, None) to stop."""
        while True:
            if self._control:
                return self._control.popleft(), None
            if self._stopping:
                return None, None
            self._drop_stale()
            if not self._pending:
                self._cond.wait()
                continue
            head = self._pending[0]
            batch = [head]
            images = head.job.n
            for p in list(self._pending)[1:]:
                if p.job.merges_with(head.job) and images + p.job.n <= self.max_batch:
                    batch.append(p)
                    images += p.job.n
                    if images == self.max_batch:
                        break
            remaining = head.job.queued_at + self.max_wait_s - time.monotonic()
            alone = self._requests <= len(self._pending) and all(
                p.job.tracked for p in self._pending
            )
            if images >= self.max_batch or remaining <= 0 or alone:
                for p in batch:
                    self._pending.remove(p)
                    self._waiting_images -= p.job.n
                return None, batch
            self._cond.wait(remaining)

    def _drop_stale(self) -> None:
        now = time.monotonic()
        for p in list(self._pending):
            reason = (
                "cancelled"
                if p.job.cancelled.is_set() or p.future.cancelled()
                else "deadline passed"
                if now >= p.job.deadline
                else None
            )
            if reason is None:
                continue
            self._pending.remove(p)
            self._waiting_images -= p.job.n
            if p.future.set_running_or_notify_cancel():
                p.future.set_exception(JobDropped(f"dropped before it ran: {reason}"))

    def _dispatch(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.job.cancelled.is_set()]
        live = [p for p in live if p.future.set_running_or_notify_cancel()]
        for p in batch:
            if p not in live and not p.future.done():
                p.future.set_exception(JobDropped("dropped before it ran: cancelled"))
        if not live:
            return
        try:
            self._run(live)
        except Exception as exc:
            if len(live) == 1:
                live[0].future.set_exception(exc)
                return
            log.warning(
                "%s: a batch of %d jobs failed (%s); running them one at a time",
                self.name,
                len(live),
                exc,
            )
            for p in live:
                try:
                    self._run([p])
                except Exception as one:
                    p.future.set_exception(one)

    def _run(self, batch: list[_Pending]) -> None:
        if self._run_batch is None:
            raise RuntimeError(f"{self.name}: no pipeline is loaded")
        jobs = [p.job for p in batch]
        started = time.monotonic()
        outputs = self._run_batch(jobs[0].key, jobs)
        generator_ms = _ms(time.monotonic() - started)
        if len(outputs) != len(jobs) or any(
            len(o) != j.n for o, j in zip(outputs, jobs, strict=True)
        ):
            raise RuntimeError("the pipeline returned the wrong number of images")
        batch_id = uuid.uuid4().hex[:16]
        size = sum(j.n for j in jobs)
        scored: list[Future[Scored]] = [Future() for _ in jobs]
        for p, images, done in zip(batch, outputs, scored, strict=True):
            info = BatchInfo(batch_id, size, _ms(started - p.job.queued_at), generator_ms)
            p.future.set_result(JobOutput(images, info, done))
        try:
            self._post.submit(score_batch, [j.scorer for j in jobs], outputs, scored)
        except RuntimeError:  # stopping: the scoring thread is shut; score here, never drop
            score_batch([j.scorer for j in jobs], outputs, scored)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)
