"""Working on drafts: create, edit with inline validation, test, replay, submit, approve, reject.

Every POST carries the session's CSRF token. Legal editors create, edit, replay and submit;
legal approvers approve or reject (never their own draft: ``four_eyes_required``). A refusal
from the service is shown on the page with the service's own message.
"""

# No "from __future__ import annotations": FastAPI must see the Annotated dependencies
# defined inside routes() as objects, not as names it cannot resolve.

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from gateway.audit.search import FilterError, parse_time
from gateway.console.web import POLICY_READ_ROLES, Console, PageError, Visitor, text_field
from gateway.domain import Role
from gateway.errors import GatewayError
from gateway.policy.workflow import PolicyService

DEFAULT_FILE = "content.yaml"
REPLAY_DEFAULT, REPLAY_MAX = 1000, 100_000


def annotate(text: str, errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The file's lines, each with the validation messages that point at it."""
    by_line: dict[int, list[str]] = {}
    for error in errors:
        if error.get("line"):
            by_line.setdefault(int(error["line"]), []).append(_message(error))
    lines = text.split("\n")
    last = len(lines)
    for number in [n for n in by_line if n > last]:  # past the end: show on the last line
        by_line.setdefault(last, []).extend(by_line.pop(number))
    return [{"n": i, "text": line, "errors": by_line.get(i, [])} for i, line in enumerate(lines, 1)]


def refusal_details(exc: GatewayError, most: int = 10) -> list[str]:
    """What a refusal names: the validation errors or failing tests, one line each."""
    lines: list[str] = []
    for error in exc.extra.get("errors", []):
        where = f"{error.get('file')}:{error['line']}" if error.get("line") else error.get("file")
        lines.append(f"{where}: {_message(error)}")
    for case in exc.extra.get("failures", []):
        lines.append(
            f"{case.get('file')}: {case.get('name')}: {'; '.join(case.get('failures', []))}"
        )
    return lines[:most]


def _message(error: dict[str, Any]) -> str:
    path = error.get("path")
    return f"{path}: {error['message']}" if path else str(error["message"])


def _int(form: FormData, name: str, default: int, low: int, high: int) -> int:
    raw = text_field(form, name).strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise PageError(422, f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise PageError(422, f"{name} must be between {low} and {high}")
    return value


def _time(form: FormData, name: str) -> Any:
    raw = text_field(form, name).strip()
    try:
        return parse_time(raw, name) if raw else None
    except FilterError as exc:
        raise PageError(422, exc.message) from None


def routes(console: Console) -> APIRouter:
    router = console.router()
    Reader = Annotated[Visitor, Depends(console.require(*POLICY_READ_ROLES))]
    Editor = Annotated[Visitor, Depends(console.require(Role.LEGAL_EDITOR))]
    Approver = Annotated[Visitor, Depends(console.require(Role.LEGAL_APPROVER))]

    def to_version(draft_id: int, done: str) -> Response:
        return RedirectResponse(f"/console/policies/versions/{draft_id}?done={done}", 303)

    async def act(
        request: Request,
        visitor: Visitor,
        draft_id: int,
        action: Callable[[PolicyService, FormData], Any],
        done: str,
    ) -> Response:
        """Run a workflow action; either way the browser is redirected to the version page
        (post-redirect-get), a refusal travelling in a short-lived encrypted cookie."""
        form = await console.form(request, visitor.session)
        try:
            await run_in_threadpool(action, PolicyService(visitor.runtime), form)
        except GatewayError as exc:
            response = RedirectResponse(f"/console/policies/versions/{draft_id}?refused=1", 303)
            console.codec.set_flash(
                response,
                {"status": exc.status, "error": exc.message, "details": refusal_details(exc)},
            )
            return response
        return to_version(draft_id, done)

    @router.post("/policies/drafts")
    async def create(request: Request, visitor: Editor) -> Response:
        form = await console.form(request, visitor.session)
        base = text_field(form, "base_version").strip()
        note = text_field(form, "note").strip() or None
        try:
            base_id = int(base) if base else None
        except ValueError:
            raise PageError(422, "base_version must be a version number") from None
        service = PolicyService(visitor.runtime)
        draft = await run_in_threadpool(
            service.create_draft, visitor.principal, base_id, None, note
        )
        return RedirectResponse(f"/console/policies/drafts/{draft['draft_id']}/edit", 303)

    @router.get("/policies/drafts/{draft_id}/edit")
    def edit(
        request: Request, visitor: Editor, draft_id: int, file: str = DEFAULT_FILE
    ) -> Response:
        service = PolicyService(visitor.runtime)
        version = service.version(draft_id)
        if version["status"] != "draft":
            raise PageError(409, f"Version {draft_id} is {version['status']}, not a draft.")
        files: dict[str, str] = version["files"]
        if file not in files and files and file == DEFAULT_FILE:
            file = sorted(files)[0]
        text = files.get(file, "")
        validation = service.validate(draft_id)
        here = [e for e in validation["errors"] if e.get("file") == file]
        return console.render(
            request,
            "draft_edit.html",
            v=version,
            file=file,
            new_file=file not in files,
            text=text,
            lines=annotate(text, here),
            valid=validation["valid"],
            file_errors=[e for e in here if not e.get("line")],
            other_errors=[e for e in validation["errors"] if e.get("file") != file],
            error_files=sorted({str(e.get("file")) for e in validation["errors"]}),
            saved=request.query_params.get("saved") == "1",
        )

    @router.post("/policies/drafts/{draft_id}/edit")
    async def save(request: Request, visitor: Editor, draft_id: int) -> Response:
        form = await console.form(request, visitor.session)
        file = text_field(form, "file").strip()
        if not file:
            raise PageError(422, "Name the file to save.")
        # browsers send a textarea's lines with CRLF; policy files use LF
        content = text_field(form, "content").replace("\r\n", "\n")
        change: dict[str, str | None] = {file: None if form.get("delete") else content}
        note = text_field(form, "note").strip() or None
        service = PolicyService(visitor.runtime)
        await run_in_threadpool(service.update_draft, visitor.principal, draft_id, change, note)
        query = urlencode({"saved": 1} if form.get("delete") else {"file": file, "saved": 1})
        return RedirectResponse(f"/console/policies/drafts/{draft_id}/edit?{query}", 303)

    @router.post("/policies/drafts/{draft_id}/test")
    async def run_tests(request: Request, visitor: Reader, draft_id: int) -> Response:
        await console.form(request, visitor.session)
        service = PolicyService(visitor.runtime)
        result = await run_in_threadpool(service.test, draft_id)
        version = service.version(draft_id)
        return console.render(request, "draft_tests.html", v=version, r=result)

    @router.post("/policies/drafts/{draft_id}/replay")
    async def replay(request: Request, visitor: Editor, draft_id: int) -> Response:
        form = await console.form(request, visitor.session)
        limit = _int(form, "limit", REPLAY_DEFAULT, 1, REPLAY_MAX)
        since = _time(form, "since")
        service = PolicyService(visitor.runtime)
        version = service.version(draft_id)
        try:
            result = await run_in_threadpool(
                service.replay, visitor.principal, draft_id, limit, since
            )
        except GatewayError as exc:
            raise PageError(exc.status, exc.message) from None
        return console.render(
            request,
            "draft_replay.html",
            v=version,
            r=result,
            limit=limit,
            since=text_field(form, "since"),
            link_decisions=visitor.can(Role.AUDITOR),
        )

    @router.post("/policies/drafts/{draft_id}/submit")
    async def submit(request: Request, visitor: Editor, draft_id: int) -> Response:
        return await act(
            request,
            visitor,
            draft_id,
            lambda s, _: s.submit(visitor.principal, draft_id),
            "submitted",
        )

    @router.post("/policies/drafts/{draft_id}/approve")
    async def approve(request: Request, visitor: Approver, draft_id: int) -> Response:
        return await act(
            request,
            visitor,
            draft_id,
            lambda s, f: s.approve(visitor.principal, draft_id, _time(f, "effective_at")),
            "approved",
        )

    @router.post("/policies/drafts/{draft_id}/reject")
    async def reject(request: Request, visitor: Approver, draft_id: int) -> Response:
        return await act(
            request,
            visitor,
            draft_id,
            lambda s, f: s.reject(visitor.principal, draft_id, text_field(f, "reason")),
            "rejected",
        )

    return router
