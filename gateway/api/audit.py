"""/v1/audit: decision records, search with cursor pagination, and exports (auditors).

A principal sees only its own tenant's decisions; admins see every tenant's, or one tenant's
with ``tenant=`` (id or name).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from gateway.api.deps import Auditor, RuntimeDep
from gateway.api.responses import AUTHENTICATED, errors
from gateway.audit.decisions import OUTCOMES, decision_json
from gateway.audit.export import FORMATS, export_chunks
from gateway.audit.keyring import KeyRing
from gateway.audit.report import policy_approvals, write_pdf_report
from gateway.audit.search import (
    DecisionFilters,
    FilterError,
    iter_decision_batches,
    resolve_tenant,
    search_decisions,
)
from gateway.audit.verify import verify_trail
from gateway.auth.names import load_names
from gateway.db.engine import unit_of_work
from gateway.db.models import Decision
from gateway.domain import CATEGORIES, INTENDED_USES, Role
from gateway.errors import GatewayError

router = APIRouter(tags=["audit"], responses=errors(*AUTHENTICATED))


def _invalid(exc: FilterError) -> GatewayError:
    """The filter's own message when it names its field ("since must be …"), else prefixed."""
    named = exc.message.startswith(exc.param)
    message = exc.message if named else f"{exc.param}: {exc.message}"
    return GatewayError(422, "invalid_request", message, param=exc.param)


def _time(description: str) -> Any:
    """A time filter, declared as what ``parse_time`` accepts: a date or an RFC 3339 date-time."""
    return Query(
        description=description + "; a date (YYYY-MM-DD) or date-time (naive means UTC)",
        json_schema_extra={
            "anyOf": [
                {"type": "string", "format": "date"},
                {"type": "string", "format": "date-time"},
            ]
        },
    )


NO_NUL = r"^[^\x00]*$"  # stored text cannot hold NUL (PostgreSQL refuses it in a query)


def _choice(values: tuple[str, ...]) -> Any:
    return Query(json_schema_extra={"enum": list(values)})


def audit_filters(
    principal: Auditor,
    runtime: RuntimeDep,
    since: Annotated[str | None, _time("inclusive")] = None,
    until: Annotated[str | None, _time("exclusive (a date: its end)")] = None,
    tenant: Annotated[
        str | None, Query(description="tenant id or name (admins)", pattern=NO_NUL)
    ] = None,
    model: Annotated[str | None, Query(pattern=NO_NUL)] = None,
    licence: Annotated[str | None, Query(pattern=NO_NUL)] = None,
    intended_use: Annotated[str | None, _choice(INTENDED_USES)] = None,
    outcome: Annotated[str | None, _choice(OUTCOMES)] = None,
    category: Annotated[str | None, _choice(CATEGORIES)] = None,
    user: Annotated[str | None, Query(pattern=NO_NUL)] = None,
) -> DecisionFilters:
    """The query's filters, pinned to the caller's tenant unless the caller is an admin.

    An empty ``since``, ``until`` or choice is refused (422) as the schema says, not ignored.
    """
    for name, value in (
        ("since", since),
        ("until", until),
        ("intended_use", intended_use),
        ("outcome", outcome),
        ("category", category),
    ):
        if value == "":
            raise GatewayError(422, "invalid_request", f"{name}: must not be empty", param=name)
    if Role.ADMIN in principal.roles:
        tenant_id = None
        if tenant:
            with unit_of_work(runtime.sessions) as session:
                tenant_id = resolve_tenant(session, tenant)
            if tenant_id is None:
                raise GatewayError(
                    422, "invalid_request", f"tenant: no tenant {tenant!r}", param="tenant"
                )
    else:
        if tenant and tenant not in (principal.tenant_id, principal.tenant_name):
            raise GatewayError(
                403,
                "insufficient_role",
                "only admins may read another tenant's decisions",
                param="tenant",
            )
        tenant_id = principal.tenant_id
    try:
        return DecisionFilters.from_query(
            since=since,
            until=until,
            tenant_id=tenant_id,
            model=model,
            licence=licence,
            intended_use=intended_use,
            outcome=outcome,
            category=category,
            user=user,
        )
    except FilterError as exc:
        raise _invalid(exc) from None


Filters = Annotated[DecisionFilters, Depends(audit_filters)]


@router.get("/v1/audit/decisions", responses=errors(422))
def list_decisions(
    filters: Filters,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Decisions newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    with unit_of_work(runtime.sessions) as session:
        try:
            page, next_cursor = search_decisions(session, filters, limit=limit, cursor=cursor)
        except FilterError as exc:
            raise _invalid(exc) from None
        return {
            "object": "list",
            "data": [decision_json(d) for d in page],
            "next_cursor": next_cursor,
        }


@router.get("/v1/audit/decisions/{decision_id}", responses=errors(404))
def get_decision(decision_id: str, principal: Auditor, runtime: RuntimeDep) -> dict[str, Any]:
    with unit_of_work(runtime.sessions) as session:
        decision = session.get(Decision, decision_id)
        visible = decision is not None and (
            Role.ADMIN in principal.roles or decision.tenant_id == principal.tenant_id
        )
        if decision is None or not visible:
            raise GatewayError(
                404, "decision_not_found", f"no decision {decision_id!r}", param="decision_id"
            )
        return decision_json(decision)


@router.get(
    "/v1/audit/decisions/{decision_id}/images/{index}",
    response_class=Response,
    responses={
        **errors(404),
        200: {
            "description": "the quarantined image, as generated (not delivered to the caller)",
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
    },
)
def reveal_quarantined(
    decision_id: str,
    index: Annotated[int, Path(ge=0, le=63)],
    principal: Auditor,
    runtime: RuntimeDep,
) -> Response:
    """A quarantined image, for review: from the shared store, whichever replica kept it.

    Each reveal is an audit event (``quarantine.revealed``: the decision, the image, its
    SHA-256 and the key that asked), committed before the image is sent.
    """
    with unit_of_work(runtime.sessions) as session:
        decision = session.get(Decision, decision_id)
        tenant_id = decision.tenant_id if decision is not None else None
    visible = tenant_id is not None and (
        Role.ADMIN in principal.roles or tenant_id == principal.tenant_id
    )
    kept = runtime.quarantine.get(decision_id, index) if visible else None
    if kept is None:
        raise GatewayError(
            404,
            "image_not_found",
            f"no quarantined image {index} of decision {decision_id!r}",
            param="index",
        )
    with unit_of_work(runtime.sessions) as session:
        runtime.audit.append(
            session,
            "quarantine.revealed",
            {
                "decision_id": decision_id,
                "index": index,
                "sha256": kept.sha256,
                "by": f"key:{principal.key_id}",
            },
            tenant_id=tenant_id,
        )
    return Response(
        kept.data,
        media_type=kept.mime,
        headers={"Cache-Control": "no-store", "X-Image-Sha256": kept.sha256},
    )


@router.get(
    "/v1/audit/export",
    response_class=StreamingResponse,
    responses={
        **errors(422),
        200: {
            "description": "the decisions as CSV, JSON Lines or a PDF report (``format``)",
            "content": {
                media.split(";")[0]: {"schema": {"type": "string", "format": "binary"}}
                for media in FORMATS.values()
            },
        },
    },
)
def export_decisions(
    filters: Filters,
    runtime: RuntimeDep,
    fmt: Annotated[Literal["csv", "jsonl", "pdf"], Query(alias="format")] = "csv",
    verify: Annotated[
        bool, Query(description="check each row against its events (csv, jsonl)")
    ] = True,
) -> StreamingResponse:
    """Every matching decision (oldest first) as CSV, JSON Lines or a PDF report, streamed.

    The export ends at the moment of the request, so rows written meanwhile are left out.
    CSV and JSON Lines rows end with ``verified``, ``verified_checkpoint`` and
    ``verification_error`` (docs/audit.md); ``verify=false`` skips the check (faster) and
    says so in every row.
    """
    now = datetime.now(UTC)
    pinned = filters.until_at_most(now)
    filename = f"audit-decisions-{now.strftime('%Y%m%dT%H%M%SZ')}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if fmt == "pdf":
        with unit_of_work(runtime.sessions) as session:
            verification = verify_trail(session).to_json()  # every registered key
        body = _pdf_report(runtime.sessions, filters, pinned, verification)
    else:
        with unit_of_work(runtime.sessions) as session:
            key = KeyRing.registered(session)
        body = export_chunks(fmt, runtime.sessions, pinned, public_key=key, verify=verify)
    return StreamingResponse(body, media_type=FORMATS[fmt], headers=headers)


def _pdf_report(
    sessions: sessionmaker[Session],
    filters: DecisionFilters,
    pinned: DecisionFilters,
    verification: dict[str, Any],
) -> Iterator[bytes]:
    """Build the report into a spooled file (memory, then disk), then stream it."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115
    try:
        decisions = (d for batch in iter_decision_batches(sessions, pinned) for d in batch)
        with unit_of_work(sessions) as session:
            names = load_names(session)
            approvals = policy_approvals(session, names)
        write_pdf_report(
            spool,
            decisions,
            period=(filters.since, filters.until),
            verification=verification,
            names=names,
            approvals=approvals,
        )
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return _stream_file(spool)


def _stream_file(spool: IO[bytes]) -> Iterator[bytes]:
    with spool:
        while chunk := spool.read(1 << 16):
            yield chunk
