"""A daemon thread that calls one function every ``interval_s`` seconds until stopped.

The background duties of a replica (switching to a newly approved policy version, closing
decisions a fault left open) share this loop: an interval of 0 or less means "never start",
an exception in one tick is reported through ``on_error`` and the next tick runs as planned,
and ``stop`` wakes the thread at once instead of waiting out the interval.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class PeriodicTask:
    def __init__(
        self,
        name: str,
        interval_s: float,
        tick: Callable[[], object],
        on_error: Callable[[Exception], None],
        *,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self._interval = interval_s
        self._tick = tick
        self._on_error = on_error
        self._stop_timeout = stop_timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        if self._interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._stop_timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._tick()
            except Exception as exc:  # the next tick tries again; the caller says why
                self._on_error(exc)
