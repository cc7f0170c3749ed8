"""The runtime caps numpy's BLAS threads (settings.blas_threads): OpenBLAS's extra threads spin
between the prompt head's small matrix products and take the generator's core (measured: 16.3
against 6.5 ms of CPU per prompt on 2 cores)."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_info

from gateway.runtime import Runtime
from gateway.settings import Settings


def _blas_threads() -> set[int]:
    np.dot(np.ones((64, 64)), np.ones((64, 64)))  # the library numpy uses is loaded
    return {int(pool["num_threads"]) for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_the_runtime_sets_blas_threads_from_its_settings(
    runtime_factory: Callable[..., Runtime], settings_factory: Callable[..., Settings]
) -> None:
    """(The second runtime shares the first one's data directory and database: both start.)"""
    runtime_factory(settings_factory(blas_threads=1), warm=False)
    assert _blas_threads() == {1}
    several = min(2, os.cpu_count() or 1)
    runtime_factory(settings_factory(blas_threads=several), warm=False)
    assert _blas_threads() == {several}
