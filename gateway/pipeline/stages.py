"""Running a stage with a deadline: a stage that raises or overruns is a ``StageFailure``."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class StageFailure(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message


def wait_for(stage: str, future: Future[T], timeout: float) -> T:
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise StageFailure(stage, f"did not finish within {timeout:g} s") from None
    except StageFailure:
        raise
    except Exception as exc:
        raise StageFailure(stage, f"{type(exc).__name__}: {exc}") from exc


def run_stage(executor: ThreadPoolExecutor, stage: str, fn: Callable[[], T], timeout: float) -> T:
    return wait_for(stage, executor.submit(fn), timeout)
