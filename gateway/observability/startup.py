"""First-start progress: a spinner per slow step on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("gateway.startup")


class Startup:
    """``with startup.step("loading models"):`` shows what is slow and how long it took."""

    def __init__(self, *, terminal: bool) -> None:
        self._console = None
        if terminal:
            from rich.console import Console

            self._console = Console(stderr=True)

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        started = time.monotonic()
        if self._console is None:
            log.info("%s ...", label)
            yield
            log.info("%s: done in %.1f s", label, time.monotonic() - started)
            return
        with self._console.status(f"{label} ...", spinner="dots"):
            yield
        self._console.print(f"[green]✓[/] {label} [dim]({time.monotonic() - started:.1f} s)[/]")

    def summary(self, lines: list[str]) -> None:
        """The closing lines: where it listens, which models serve, where the admin key is."""
        if self._console is None:
            log.info("ready: %s", "; ".join(lines))
            return
        self._console.print("[bold green]ready[/]")
        for line in lines:
            self._console.print(f"  {line}", highlight=False, markup=False)
