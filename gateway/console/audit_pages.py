"""Auditor pages: search decisions, open one, verify the trail, download exports.

The same services and the same tenant rule as ``/v1/audit`` (a principal sees its own
tenant's decisions; admins see all, or one tenant's): the filters come from the API's own
``audit_filters`` and the downloads from its ``export_decisions``.
"""

# No "from __future__ import annotations": FastAPI must see the Annotated dependencies
# defined inside routes() as objects, not as names it cannot resolve.

import json
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.responses import Response

from gateway.api.audit import audit_filters, export_decisions
from gateway.audit.decisions import OUTCOMES, decision_json
from gateway.audit.search import DecisionFilters, FilterError, iso_utc, search_decisions
from gateway.audit.verify import verify_trail
from gateway.console.web import AUDIT_ROLES, POLICY_READ_ROLES, Console, PageError, Visitor
from gateway.db.engine import unit_of_work
from gateway.db.models import Decision, PolicyVersion
from gateway.domain import CATEGORIES, INTENDED_USES, Role
from gateway.errors import GatewayError

FILTERS = (
    "since",
    "until",
    "tenant",
    "model",
    "licence",
    "intended_use",
    "outcome",
    "category",
    "user",
)
EXPORT_FORMATS = ("csv", "jsonl", "pdf")
EXPORT_LABELS = {"csv": "CSV", "jsonl": "JSON Lines", "pdf": "PDF report"}
CHOICES = {"intended_use": INTENDED_USES, "outcome": OUTCOMES, "category": CATEGORIES}


def _filter_values(request: Request) -> dict[str, str]:
    return {name: request.query_params.get(name, "").strip() for name in FILTERS}


def _filters(visitor: Visitor, values: dict[str, str]) -> DecisionFilters:
    """The API's filters for these values, pinned to the visitor's tenant (GatewayError)."""
    return audit_filters(
        visitor.principal,
        visitor.runtime,
        **{name: (values[name] or None) for name in FILTERS},
    )


def _row(decision: Decision) -> dict[str, Any]:
    return {
        "id": decision.id,
        "created_at": iso_utc(decision.created_at),
        "tenant_id": decision.tenant_id,
        "key_id": decision.key_id,
        "prompt": (decision.request or {}).get("prompt"),
        "user": decision.user,
        "status": decision.status,
        "outcome": decision.outcome,
        "model_id": decision.model_id,
        "intended_use": decision.intended_use,
        "categories": [c for c in (decision.categories or "").split(",") if c],
        "policy_version": decision.policy_version,
    }


def _bundle_choices(visitor: Visitor) -> dict[str, list[str]]:
    """Model and licence filters as choices: those the policy in force names."""
    bundle = visitor.runtime.bundle
    return {"model": sorted(bundle.models.models), "licence": sorted(bundle.licences)}


def _published_version(session: Session, sha256: str) -> int | None:
    """The id of the published (or since retired) policy version with this content hash."""
    return session.scalar(
        select(PolicyVersion.id)
        .where(PolicyVersion.sha256 == sha256, PolicyVersion.status.in_(("published", "retired")))
        .order_by(PolicyVersion.id.desc())
        .limit(1)
    )


def routes(console: Console) -> APIRouter:
    router = console.router()
    AuditVisitor = Annotated[Visitor, Depends(console.require(*AUDIT_ROLES))]

    @router.get("/audit/decisions")
    def search(
        request: Request, visitor: AuditVisitor, limit: int = 50, cursor: str | None = None
    ) -> Response:
        values = _filter_values(request)
        limit = max(1, min(limit, 500))
        rows: list[dict[str, Any]] = []
        next_cursor: str | None = None
        error: str | None = None
        try:
            filters = _filters(visitor, values)
            with unit_of_work(visitor.runtime.sessions) as session:
                page, next_cursor = search_decisions(session, filters, limit=limit, cursor=cursor)
                rows = [_row(d) for d in page]
        except GatewayError as exc:
            error = exc.message
        except FilterError as exc:
            error = exc.message if exc.message.startswith(exc.param) else f"{exc.param}: {exc}"
        query = {k: v for k, v in values.items() if v}
        next_href = (
            "?" + urlencode({**query, "limit": limit, "cursor": next_cursor})
            if next_cursor
            else None
        )
        exports = [
            (label, "?" + urlencode({**query, "format": fmt}))
            for fmt, label in EXPORT_LABELS.items()
        ]
        return console.render(
            request,
            "decisions.html",
            status=422 if error else 200,
            values=values,
            choices={**_bundle_choices(visitor), **CHOICES},
            show_tenant=visitor.principal.has(Role.ADMIN),
            rows=rows,
            limit=limit,
            error=error,
            first_page=not cursor,
            first_href="?" + urlencode(query) if query else "?",
            next_href=next_href,
            exports=exports,
        )

    @router.get("/audit/decisions/{decision_id}")
    def decision(request: Request, visitor: AuditVisitor, decision_id: str) -> Response:
        with unit_of_work(visitor.runtime.sessions) as session:
            row = session.get(Decision, decision_id)
            visible = row is not None and (
                visitor.principal.has(Role.ADMIN) or row.tenant_id == visitor.principal.tenant_id
            )
            if row is None or not visible:
                raise PageError(404, f"There is no decision {decision_id!r} you may see.")
            record = decision_json(row)
            version_id = (
                _published_version(session, row.policy_version)
                if visitor.can(*POLICY_READ_ROLES)
                else None
            )
        return console.render(
            request,
            "decision.html",
            d=record,
            version_id=version_id,
            raw=json.dumps(record, indent=2, ensure_ascii=False, sort_keys=True),
        )

    @router.get("/audit/verify")
    def verify(
        request: Request, visitor: AuditVisitor, run: bool = False, from_checkpoint: bool = False
    ) -> Response:
        report: dict[str, Any] | None = None
        signer = visitor.runtime.audit.signer
        if run:
            with unit_of_work(visitor.runtime.sessions) as session:
                report = verify_trail(  # every registered key
                    session, None, from_last_checkpoint=from_checkpoint
                ).to_json()
        return console.render(
            request,
            "verify.html",
            report=report,
            public_key=signer.public_key_b64,
            from_checkpoint=from_checkpoint,
        )

    @router.get("/audit/export")
    def export(request: Request, visitor: AuditVisitor, format: str = "csv") -> Response:
        if format not in EXPORT_FORMATS:
            raise PageError(422, f"format must be one of {', '.join(EXPORT_FORMATS)}")
        try:
            filters = _filters(visitor, _filter_values(request))
        except GatewayError as exc:
            raise PageError(exc.status, exc.message) from None
        fmt: Any = format
        return export_decisions(filters, visitor.runtime, fmt)

    return router
