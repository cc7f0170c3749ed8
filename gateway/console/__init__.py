"""The web console at /console: server-rendered pages for auditors and legal teams.

``console_router(settings)`` builds every page group around one ``Console`` (session codec,
templates); ``create_app`` includes it.
"""

from __future__ import annotations

from fastapi import APIRouter

from gateway.console import audit_pages, auth_pages, draft_pages, policy_pages
from gateway.console.web import Console
from gateway.settings import Settings


def console_router(settings: Settings) -> APIRouter:
    console = Console(settings)
    router = APIRouter()
    for pages in (auth_pages, audit_pages, policy_pages, draft_pages):
        router.include_router(pages.routes(console))
    return router
