"""create_app(settings) -> FastAPI. The lifespan builds the runtime unless one is given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.api import (
    admin,
    audit,
    audit_trail,
    fine_tuning,
    health,
    images,
    metrics,
    models,
    moderations,
    policies,
    policy,
    provenance,
)
from gateway.api.body_limit import BodyLimit
from gateway.api.errors import install_error_handlers
from gateway.api.request_id import RequestIdMiddleware
from gateway.console import console_router
from gateway.runtime import Runtime, build_runtime
from gateway.settings import Settings


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        app.state.runtime = runtime if runtime is not None else build_runtime(settings)
        stop_metrics = metrics.serve_metrics(settings, app.state.runtime.metrics)
        try:
            yield
        finally:
            if stop_metrics is not None:
                stop_metrics()
            if owned:
                app.state.runtime.close()

    app = FastAPI(
        title="Governed image generation gateway",
        version="0.1.0",
        lifespan=lifespan,
        description="OpenAI-compatible image generation with safety and licence governance.",
    )
    if runtime is not None:
        app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestIdMiddleware)  # innermost of ServerErrorMiddleware: see there
    for router in (
        health.router,
        images.router,
        moderations.router,
        provenance.router,
        fine_tuning.router,
        models.router,
        audit.router,
        audit_trail.router,
        policy.router,
        policies.router,
        admin.router,
    ):
        app.include_router(router)
    app.include_router(console_router(settings))
    app.include_router(metrics.metrics_router(settings))  # or its own port (metrics_port)
    return app
