"""A bounded queue in front of the generator: one worker thread runs jobs in order.

When the queue is full, ``submit`` raises ``QueueFull`` at once (the API answers 429 with
``Retry-After``) instead of letting requests pile up behind the model.

``waiting_images`` (for metrics) counts the images of the jobs not yet started, per model.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class QueueFull(Exception):
    pass


class GenerationWorker:
    def __init__(self, max_waiting: int, *, name: str = "generation-worker") -> None:
        self._queue: queue.Queue[tuple[Callable[[], Any], Future[Any], str, int] | None] = (
            queue.Queue(maxsize=max_waiting)
        )
        self._waiting: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def submit(self, job: Callable[[], T], *, model: str = "", images: int = 1) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:  # counted before the worker can take it
            self._waiting[model] += images
        try:
            self._queue.put_nowait((job, future, model, images))
        except queue.Full:
            self._taken(model, images)
            raise QueueFull from None
        return future

    def waiting_images(self) -> dict[str, int]:
        with self._lock:
            return {model: n for model, n in self._waiting.items() if model}

    def _taken(self, model: str, images: int) -> None:
        with self._lock:
            self._waiting[model] -= images
            if self._waiting[model] <= 0:
                del self._waiting[model]

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def stop(self, timeout: float = 10.0) -> None:
        if self._started:
            self._queue.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            job, future, model, images = item
            self._taken(model, images)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # the request thread decides what failure means
                future.set_exception(exc)
