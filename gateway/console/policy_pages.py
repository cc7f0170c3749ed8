"""Policy pages anyone who may read policy sees: the active version, history, one version, diffs.

Roles as in ``/v1/policies``: legal editors, legal approvers and auditors read; what a page
offers to do (edit, submit, approve, reject) depends on the version's state and the visitor's
roles, and the service checks the role again on every action.
"""

# No "from __future__ import annotations": FastAPI must see the Annotated dependencies
# defined inside routes() as objects, not as names it cannot resolve.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from gateway.console.session import FLASH_COOKIE
from gateway.console.web import POLICY_READ_ROLES, Console, PageError, Visitor
from gateway.domain import Role
from gateway.errors import GatewayError
from gateway.policy.workflow import PolicyService

DONE = {
    "created": "Draft created.",
    "saved": "Draft saved.",
    "submitted": "Submitted for review. A legal approver other than its authors must approve it.",
    "approved": "Approved and published (in force from its effective time).",
    "rejected": "Rejected.",
}


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """(css class, text) per line of a unified diff."""
    out: list[tuple[str, str]] = []
    for line in diff.splitlines():
        kind = (
            "hunk"
            if line.startswith("@@")
            else "meta"
            if line.startswith(("+++", "---"))
            else "add"
            if line.startswith("+")
            else "del"
            if line.startswith("-")
            else "ctx"
        )
        out.append((kind, line))
    return out


REVIEW_REPLAY = 1000  # decisions the review page replays


def version_page(console: Console, request: Request, visitor: Visitor, version_id: int) -> Response:
    """One version: its facts, files and the actions open to this visitor in its state.

    A refused action redirects here with its refusal in the flash cookie (read once). A
    version in review shows its approver the policy tests and a replay of recent decisions.
    """
    service = PolicyService(visitor.runtime)
    version = service.version(version_id)
    state = version["status"]
    flash = console.codec.read_flash(request.cookies.get(FLASH_COOKIE))
    can_review = state == "in_review" and visitor.can(Role.LEGAL_APPROVER)
    tests: dict[str, Any] | None = None
    replay: dict[str, Any] | None = None
    if can_review:
        tests = service.test(version_id)
        try:
            replay = service.replay(visitor.principal, version_id, REVIEW_REPLAY)
        except GatewayError:
            replay = None  # the draft does not validate: the tests say why
    response = console.render(
        request,
        "policy_version.html",
        v=version,
        error=flash.get("error") if flash else None,
        details=[str(d) for d in flash.get("details", [])] if flash else [],
        done=DONE.get(request.query_params.get("done", "")),
        can_edit=state == "draft" and visitor.can(Role.LEGAL_EDITOR),
        can_test=state == "draft",
        can_review=can_review,
        can_base=visitor.can(Role.LEGAL_EDITOR),
        tests=tests,
        replay=replay,
        link_decisions=visitor.can(Role.AUDITOR),
    )
    if FLASH_COOKIE in request.cookies:
        console.codec.clear_flash(response)
    return response


def routes(console: Console) -> APIRouter:
    router = console.router()
    Reader = Annotated[Visitor, Depends(console.require(*POLICY_READ_ROLES))]

    @router.get("/policies")
    def overview(request: Request, visitor: Reader) -> Response:
        service = PolicyService(visitor.runtime)
        active: dict[str, Any] | None
        try:
            active = service.active()
        except GatewayError:
            active = None
        versions = service.versions()
        awaiting = [v for v in versions if v["status"] == "in_review"]
        newest = versions[0]["id"] if versions else None
        return console.render(
            request,
            "policies.html",
            active=active,
            versions=versions,
            diff_a=active["id"] if active else newest,
            diff_b=newest,
            can_create=visitor.can(Role.LEGAL_EDITOR),
            awaiting=awaiting,
            can_approve=visitor.can(Role.LEGAL_APPROVER),
        )

    @router.get("/policies/versions/{version_id}")
    def version(request: Request, visitor: Reader, version_id: int) -> Response:
        return version_page(console, request, visitor, version_id)

    @router.get("/policies/versions/{version_id}/files/{path:path}")
    def version_file(request: Request, visitor: Reader, version_id: int, path: str) -> Response:
        version = PolicyService(visitor.runtime).version(version_id)
        if path not in version["files"]:
            raise PageError(404, f"Version {version_id} has no file {path!r}.")
        lines = version["files"][path].split("\n")
        return console.render(request, "policy_file.html", v=version, path=path, lines=lines)

    @router.get("/policies/diff")
    def diff(request: Request, visitor: Reader, a: int, b: int) -> Response:
        result = PolicyService(visitor.runtime).diff(a, b)
        files = [{**f, "lines": diff_lines(f["diff"])} for f in result["files"]]
        return console.render(request, "policy_diff.html", a=a, b=b, files=files)

    return router
