"""A request's cancellation: set once, when its HTTP client disconnects.

The image route watches the connection while the request's thread runs the pipeline; on
``http.disconnect`` it calls :meth:`Cancellation.cancel`. The generator stage registers a
callback that takes its job off the model's queue (:meth:`Batcher.cancel`), so a request whose
client went away is dropped before it runs and its images stop counting toward the 429 bound
at once. A request whose images are already being generated runs to its end: the decision is
recorded as usual and the response goes nowhere.

Invariant: callbacks run exactly once, on the thread that cancels (or at once on the thread
that registers, if the request was already cancelled), never while a lock is held.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

CLIENT_DISCONNECTED = "the client disconnected"


class Cancellation:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._callbacks: dict[int, Callable[[str], object]] = {}
        self._next = 0

    @property
    def reason(self) -> str | None:
        """Why the request was cancelled; None while it is not."""
        with self._lock:
            return self._reason

    def cancel(self, reason: str = CLIENT_DISCONNECTED) -> None:
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for fn in callbacks:
            fn(reason)

    def on_cancel(self, fn: Callable[[str], object]) -> Callable[[], None]:
        """Call ``fn(reason)`` when cancelled (now, if already); returns an unregister."""
        with self._lock:
            reason = self._reason
            if reason is None:
                token = self._next
                self._next += 1
                self._callbacks[token] = fn
        if reason is not None:
            fn(reason)
            return lambda: None

        def unregister() -> None:
            with self._lock:
                self._callbacks.pop(token, None)

        return unregister
