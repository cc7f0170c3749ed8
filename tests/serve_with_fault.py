"""An app factory for ``uvicorn --factory``: the real gateway plus one route with a bug.

Only tests/test_keepalive.py serves it; production routes have no such fault. The route's
exception message stands in for a prompt: it must not reach the log.
"""

from __future__ import annotations

from fastapi import FastAPI

from gateway.app import create_app
from gateway.settings import Settings

SECRET = "a prompt that must never be logged"


def app() -> FastAPI:
    gateway = create_app(Settings())

    @gateway.get("/test/bug")
    def bug() -> None:
        raise KeyError(SECRET)

    return gateway
