"""Every error leaves in OpenAI's shape: {"error": {code, message, type, param, ...}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.routing import Match

from gateway.db.faults import describe, is_transient
from gateway.errors import GatewayError

log = logging.getLogger(__name__)


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def _allowed(request: Request) -> dict[str, str]:
    """``Allow`` for a 405: every method some route serves at this path (not just one route's)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return {"Allow": ", ".join(sorted(methods))}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        if first.get("type") == "json_invalid" or (
            first.get("type") == "model_attributes_type" and tuple(first["loc"]) == ("body",)
        ):
            err = GatewayError(400, "invalid_json", "the request body is not a JSON object")
            return JSONResponse(err.body(), status_code=400)
        param = _param(tuple(first["loc"]))
        msg = str(first["msg"]).removeprefix("Value error, ")
        if first.get("type") == "extra_forbidden":
            msg = "unknown field"
        details = [{"param": _param(tuple(e["loc"])), "message": str(e["msg"])} for e in errors]
        err = GatewayError(
            422,
            "invalid_request",
            f"{param or 'body'}: {msg}",
            param=param,
            extra={"details": details},
        )
        return JSONResponse(err.body(), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
            exc.status_code, "http_error"
        )
        err = GatewayError(exc.status_code, code, str(exc.detail))
        headers = _allowed(request) if exc.status_code == 405 else exc.headers
        return JSONResponse(err.body(), status_code=exc.status_code, headers=headers)

    # A database that is down, locked or dropping connections is not a bug: 503, retry
    # later. Decision writes say so themselves (503 audit_unavailable, after retrying).
    # Anything else unexpected is answered 500 by gateway.api.request_id.
    @app.exception_handler(SQLAlchemyError)
    async def database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        if not is_transient(exc):
            raise exc
        log.warning("database unavailable in %s: %s", request.url.path, describe(exc))
        runtime = getattr(request.app.state, "runtime", None)
        retry_after = runtime.settings.retry_after_s if runtime is not None else 2
        err = GatewayError(503, "database_unavailable", "the database is unavailable; retry later")
        return JSONResponse(err.body(), status_code=503, headers={"Retry-After": str(retry_after)})
