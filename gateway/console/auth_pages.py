"""Sign in with an API key, sign out, the home page and the style sheet."""

# No "from __future__ import annotations": FastAPI must see the Annotated dependencies
# defined inside routes() as objects, not as names it cannot resolve.

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from starlette.responses import RedirectResponse, Response

from gateway.console.web import Console, PageError, Visitor, get_runtime, text_field


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a console path (never another site)."""
    if target and target.startswith("/console") and "//" not in target and "\\" not in target:
        return target
    return "/console"


def routes(console: Console) -> APIRouter:
    router = console.router()
    SignedIn = Annotated[Visitor, Depends(console.visitor)]

    @router.get("/static/console.css")
    def stylesheet() -> FileResponse:
        return FileResponse(console.static_dir / "console.css", media_type="text/css")

    @router.get("/static/editor.js")
    def editor_script() -> FileResponse:
        return FileResponse(console.static_dir / "editor.js", media_type="text/javascript")

    @router.get("/login")
    def login_form(request: Request, next: str | None = None) -> Response:
        session = console.session(request)
        runtime = get_runtime(request)
        if session and session.key and console.authenticate(runtime, session.key) is not None:
            return RedirectResponse(safe_next(next), status_code=303)
        fresh = console.codec.new(None)
        response = console.render(request, "login.html", csrf=fresh.csrf, next=safe_next(next))
        console.codec.set_cookie(response, fresh)
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        session = console.session(request)
        form = await request.form()
        target = safe_next(text_field(form, "next"))
        if session is None or not session.csrf_matches(form.get("csrf_token")):
            return _retry(
                request, 403, "The sign-in form expired or was not ours. Please try again.", target
            )
        key = text_field(form, "api_key").strip()
        principal = console.authenticate(get_runtime(request), key) if key else None
        if principal is None:
            return _retry(request, 401, "That API key is not valid (or was revoked).", target)
        response = RedirectResponse(target, status_code=303)
        console.codec.set_cookie(response, console.codec.new(key))  # new CSRF token too
        return response

    def _retry(request: Request, status: int, error: str, target: str) -> Response:
        fresh = console.codec.new(None)
        response = console.render(
            request, "login.html", status=status, csrf=fresh.csrf, next=target, error=error
        )
        console.codec.set_cookie(response, fresh)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        session = console.session(request)
        form = await request.form()
        if session is not None and not session.csrf_matches(form.get("csrf_token")):
            raise PageError(403, "The sign-out form's security token is wrong.", "Request refused")
        response = RedirectResponse("/console/login", status_code=303)
        console.codec.clear_cookie(response)
        return response

    @router.get("")
    @router.get("/")
    def home(request: Request, visitor: SignedIn) -> Response:
        return console.render(request, "home.html")

    return router
