"""Every response carries ``X-Request-ID``; an unexpected exception is answered, never re-raised.

A pure ASGI middleware, just inside Starlette's ``ServerErrorMiddleware``. It takes the
client's ``X-Request-ID`` when it is sane (1-128 of ``A-Z a-z 0-9 . _ : -``), else makes
``req_<32 hex>``, puts it in ``scope["state"]["request_id"]`` and adds it to every response.

An exception that no handler turned into a response is logged with the request id, the
method, the path (not the query string) and the traceback's frames; the exception's message
is not logged, since it may quote a prompt, and headers (the API key) never are. The client
gets 500 ``internal_error`` in OpenAI's error shape with ``request_id``. The exception stops
here: ``ServerErrorMiddleware`` would send the same 500 and then re-raise it to the server,
which drops the keep-alive connection and fails the client's next request on it. If the
response had already started, nothing more can be sent; the server closes that connection.
"""

from __future__ import annotations

import logging
import re
import traceback
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import GatewayError
from gateway.observability.logs import request_id_var

log = logging.getLogger(__name__)

HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _SANE.fullmatch(text):
                return text
            break
    return "req_" + uuid.uuid4().hex


def internal_error(request_id: str) -> dict[str, Any]:
    err = GatewayError(
        500,
        "internal_error",
        f"internal error; the request was not served (request id {request_id})",
        extra={"request_id": request_id},
    )
    return err.body()


def _frames(exc: BaseException) -> str:
    """The traceback without the exception's message (it may hold a prompt)."""
    return "".join(traceback.format_tb(exc.__traceback__)).rstrip()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)  # log lines of this request carry its id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.error(
                "unhandled %s in %s %s (request %s); the request was answered 500\n%s",
                type(exc).__name__,
                scope.get("method", ""),
                scope.get("path", ""),
                request_id,
                _frames(exc),
            )
            if started:  # the response is half sent: the server closes this connection
                return
            response = JSONResponse(
                internal_error(request_id), status_code=500, headers={HEADER: request_id}
            )
            await response(scope, receive, send)
        finally:
            request_id_var.reset(token)
