"""What every console page shares: who is signed in, role checks, CSRF, rendering, headers.

Pages are plain server-rendered HTML (Jinja2, autoescaped), with no script. Failures leave as
HTML: a visitor who is not signed in (or whose key was revoked) is sent to the sign-in page, a
missing role or a bad CSRF token gets a 403 page, and a service's ``GatewayError`` is shown
with its status and message.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse, Response

from gateway.auth.keys import authenticate
from gateway.auth.names import Names, load_names
from gateway.console.format import compact_time
from gateway.console.licence_text import licence_sentences, rights_sentences
from gateway.console.session import COOKIE, ConsoleSession, SessionCodec
from gateway.db.engine import unit_of_work
from gateway.domain import Principal, Role
from gateway.errors import GatewayError
from gateway.runtime import Runtime
from gateway.settings import Settings

HERE = Path(__file__).resolve().parent
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# Who may use what; admins pass every check (Principal.has).
AUDIT_ROLES = (Role.AUDITOR,)
POLICY_READ_ROLES = (Role.LEGAL_EDITOR, Role.LEGAL_APPROVER, Role.AUDITOR)
NAV: tuple[tuple[str, str, tuple[Role, ...]], ...] = (
    ("Decisions", "/console/audit/decisions", AUDIT_ROLES),
    ("Verify trail", "/console/audit/verify", AUDIT_ROLES),
    ("Policies", "/console/policies", POLICY_READ_ROLES),
)


class SignInRequired(Exception):
    """No valid session: the visitor is sent to the sign-in page."""


class PageError(Exception):
    """Answer with the error page."""

    def __init__(self, status: int, message: str, title: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.title = title


@dataclass(frozen=True)
class Visitor:
    """A signed-in console user: the key's principal and the session it came with."""

    principal: Principal
    session: ConsoleSession
    runtime: Runtime

    def can(self, *roles: Role) -> bool:
        return any(self.principal.has(role) for role in roles)

    @property
    def nav(self) -> list[tuple[str, str]]:
        return [(label, href) for label, href, roles in NAV if self.can(*roles)]


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


class Console:
    """The console's shared parts, built once per app from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.codec = SessionCodec.from_settings(settings)
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.filters["compact_time"] = compact_time
        self.templates.env.filters["licence_sentences"] = licence_sentences
        self.templates.env.filters["rights_sentences"] = rights_sentences
        self.static_dir = HERE / "static"

    # -- routers and rendering ---------------------------------------------------------------

    def router(self) -> APIRouter:
        return APIRouter(
            prefix="/console", route_class=self._route_class(), include_in_schema=False
        )

    def _route_class(self) -> type[APIRoute]:
        console = self

        class ConsoleRoute(APIRoute):
            def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
                handler = super().get_route_handler()

                async def guarded(request: Request) -> Response:
                    try:
                        response = await handler(request)
                    except SignInRequired:
                        response = console.sign_in_redirect(request)
                    except PageError as exc:
                        response = console.error_page(request, exc.status, exc.message, exc.title)
                    except GatewayError as exc:
                        response = console.error_page(request, exc.status, exc.message)
                    except RequestValidationError as exc:
                        response = console.error_page(request, 422, _invalid(exc), "Bad request")
                    response.headers.update(SECURITY_HEADERS)
                    return response

                return guarded

        return ConsoleRoute

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        visitor: Visitor | None = getattr(request.state, "visitor", None)
        names = Names()
        if visitor is not None:  # people and tenants by name on every page
            with unit_of_work(visitor.runtime.sessions) as session:
                names = load_names(session)
        response = self.templates.TemplateResponse(
            request,
            template,
            {"visitor": visitor, "names": names, **context},
            status_code=status,
        )
        assert isinstance(response, HTMLResponse)
        return response

    def error_page(
        self, request: Request, status: int, message: str, title: str | None = None
    ) -> HTMLResponse:
        default = {403: "Forbidden", 404: "Not found", 409: "Conflict"}.get(status, "Error")
        return self.render(
            request, "error.html", status=status, title=title or default, message=message
        )

    def sign_in_redirect(self, request: Request) -> Response:
        target = request.url.path
        if request.method == "GET" and request.url.query:
            target += "?" + request.url.query
        response = RedirectResponse(f"/console/login?next={quote(target)}", status_code=303)
        if COOKIE in request.cookies:
            self.codec.clear_cookie(response)
        return response

    # -- dependencies ------------------------------------------------------------------------

    def session(self, request: Request) -> ConsoleSession | None:
        return self.codec.decode(request.cookies.get(COOKIE))

    def authenticate(self, runtime: Runtime, key: str) -> Principal | None:
        pepper = runtime.settings.key_pepper
        with unit_of_work(runtime.sessions) as db:
            return authenticate(db, key, pepper.get_secret_value() if pepper else "")

    def visitor(self, request: Request) -> Visitor:
        """The signed-in visitor; its key is checked again on every request."""
        session = self.session(request)
        if session is None or session.key is None:
            raise SignInRequired
        runtime = get_runtime(request)
        principal = self.authenticate(runtime, session.key)
        if principal is None:
            raise SignInRequired
        visitor = Visitor(principal, session, runtime)
        request.state.visitor = visitor
        return visitor

    def require(self, *roles: Role) -> Callable[[Request], Visitor]:
        """A dependency admitting visitors with any of ``roles`` (admins always)."""

        def check(request: Request) -> Visitor:
            visitor = self.visitor(request)
            if not visitor.can(*roles):
                names = " or ".join(r.value for r in roles)
                raise PageError(403, f"This page needs the {names} role.")
            return visitor

        return check

    async def form(self, request: Request, session: ConsoleSession) -> FormData:
        """The posted form, once its CSRF token is the session's; else a 403 page."""
        form = await request.form()
        if not session.csrf_matches(form.get("csrf_token")):
            raise PageError(
                403,
                "The form's security token is missing or stale. Reload the page and try again.",
                title="Request refused",
            )
        return form


def text_field(form: FormData, name: str) -> str:
    """A form field as text ('' when absent or a file)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _invalid(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "the request is not valid"
