"""One log line per HTTP request: method, path (never the query string), status, duration.

A pure ASGI middleware that ``gateway serve`` wraps around the app (uvicorn's own access
log is off: it prints query strings). The request id is the one the app answered with in
``X-Request-ID``, else ``request_id_var``. Headers, bodies and cookies are never read.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.observability.logs import request_id_var

log = logging.getLogger("gateway.access")


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status, request_id = 0, None

        async def record(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", ()):
                    if name.lower() == b"x-request-id":
                        request_id = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            ms = (time.perf_counter() - started) * 1000
            method, path = scope.get("method", ""), scope.get("path", "")
            log.info(
                "%s %s %d %.0f ms",
                method,
                path,
                status,
                ms,
                extra={
                    "request_id": request_id or request_id_var.get(),
                    "fields": {
                        "method": method,
                        "path": path,
                        "status": status,
                        "duration_ms": round(ms, 1),
                    },
                },
            )
