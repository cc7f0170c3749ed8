"""``GET /metrics``: the runtime's Prometheus metrics, open like ``/healthz``.

Where they are served is the operator's choice (docs/operators.md, "Metrics"): on the API's
port at ``metrics_path`` (default ``/metrics``), or on a port of their own
(``metrics_port``, served by prometheus-client's small HTTP server for as long as the app
runs), or nowhere (``metrics_enabled=false``).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from prometheus_client import start_http_server

from gateway.api.deps import RuntimeDep
from gateway.observability.metrics import GatewayMetrics
from gateway.settings import Settings


def metrics_router(settings: Settings) -> APIRouter:
    """The route on the API's port; none when the metrics are off or on a port of their own."""
    router = APIRouter(tags=["health"])
    if not settings.metrics_enabled or settings.metrics_port is not None:
        return router

    @router.get(
        settings.metrics_path,
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text format (OpenMetrics when the Accept header asks)",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        },
    )
    def metrics(request: Request, runtime: RuntimeDep) -> Response:
        body, content_type = runtime.metrics.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    return router


def serve_metrics(settings: Settings, metrics: GatewayMetrics) -> Callable[[], None] | None:
    """Start the separate metrics server if one is set; returns how to stop it."""
    if not settings.metrics_enabled or settings.metrics_port is None:
        return None
    server, thread = start_http_server(
        settings.metrics_port, addr=settings.host, registry=metrics.registry
    )

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
