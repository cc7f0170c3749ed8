"""Searching decisions: filters, keyset pagination, and constant-memory iteration.

Pages run newest first on ``(created_at, id)``; the cursor is an opaque token naming the last
row shown. Exports run oldest first in keyset batches (never OFFSET), each batch in its own
short transaction when given a session factory, so a long export holds no lock for long
(SQLite's writers take ``BEGIN IMMEDIATE``).

Time filters: ``since`` is inclusive, ``until`` exclusive; a bare date for ``until`` means
the end of that day. Times without an offset are UTC.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit.decisions import OUTCOMES
from gateway.db.engine import unit_of_work
from gateway.db.models import Decision, Tenant
from gateway.domain import CATEGORIES, INTENDED_USES

Position = tuple[datetime, str]


class FilterError(ValueError):
    """A filter value that cannot be used; ``param`` names the query parameter."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


@dataclass(frozen=True)
class DecisionFilters:
    since: datetime | None = None
    until: datetime | None = None
    tenant_id: str | None = None
    model_id: str | None = None
    licence_id: str | None = None
    intended_use: str | None = None
    outcome: str | None = None
    category: str | None = None
    user: str | None = None

    @classmethod
    def from_query(
        cls,
        *,
        since: str | None = None,
        until: str | None = None,
        tenant_id: str | None = None,
        model: str | None = None,
        licence: str | None = None,
        intended_use: str | None = None,
        outcome: str | None = None,
        category: str | None = None,
        user: str | None = None,
    ) -> DecisionFilters:
        """Parse and check textual filters (query string, command line); FilterError if bad."""
        for param, value in (("model", model), ("licence", licence), ("user", user)):
            _no_nul(value, param)
        filters = cls(
            since=parse_time(since, "since") if since else None,
            until=parse_time(until, "until", end_of_day=True) if until else None,
            tenant_id=tenant_id or None,
            model_id=model or None,
            licence_id=licence or None,
            intended_use=_one_of(intended_use, INTENDED_USES, "intended_use"),
            outcome=_one_of(outcome, OUTCOMES, "outcome"),
            category=_one_of(category, CATEGORIES, "category"),
            user=user or None,
        )
        if filters.since and filters.until and filters.since >= filters.until:
            raise FilterError("until", "until must be later than since")
        return filters

    def until_at_most(self, moment: datetime) -> DecisionFilters:
        """The same filters, ending no later than ``moment`` (pins an export's end)."""
        moment = _utc(moment)
        return replace(self, until=min(self.until, moment) if self.until else moment)

    def conditions(self) -> list[ColumnElement[bool]]:
        d = Decision
        out: list[ColumnElement[bool]] = []
        if self.since is not None:
            out.append(d.created_at >= _utc(self.since))
        if self.until is not None:
            out.append(d.created_at < _utc(self.until))
        for column, value in (
            (d.tenant_id, self.tenant_id),
            (d.model_id, self.model_id),
            (d.licence_id, self.licence_id),
            (d.intended_use, self.intended_use),
            (d.outcome, self.outcome),
            (d.user, self.user),
        ):
            if value is not None:
                out.append(column == value)
        if self.category is not None:
            out.append(d.categories.contains(f",{self.category},", autoescape=True))
        return out


_OFFSET_SPACE = re.compile(r"(\d) (\d\d(:?\d\d)?)$")


def parse_time(value: str, param: str, *, end_of_day: bool = False) -> datetime:
    """ISO 8601 date or date-time; naive means UTC. A '+' lost to URL decoding is restored."""
    text = _OFFSET_SPACE.sub(r"\1+\2", value.strip())
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end_of_day else start
        return _utc(datetime.fromisoformat(text))
    except ValueError:
        raise FilterError(
            param, f"{param} must be an ISO 8601 date or date-time, got {value!r}"
        ) from None


def _one_of(value: str | None, allowed: Sequence[str], param: str) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise FilterError(param, f"{param} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso_utc(value: datetime | None) -> str | None:
    """A stored time as ISO 8601 with 'Z' (SQLite returns naive UTC times)."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.isoformat() + "Z"
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _no_nul(value: str | None, param: str) -> None:
    # PostgreSQL text cannot hold NUL: no stored value can match one, and the query would fail
    if value is not None and "\x00" in value:
        raise FilterError(param, f"{param} must not contain NUL characters")


def resolve_tenant(session: Session, ref: str) -> str | None:
    """The id of the tenant named or identified by ``ref``; None if there is none."""
    if "\x00" in ref:
        return None  # no tenant's id or name holds NUL (and PostgreSQL would refuse the query)
    return session.scalar(select(Tenant.id).where(or_(Tenant.id == ref, Tenant.name == ref)))


# -- cursors ---------------------------------------------------------------------------------


def encode_cursor(position: Position) -> str:
    created, decision_id = position
    raw = json.dumps([iso_utc(created), decision_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position a cursor names; FilterError (a ValueError) if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, decision_id = json.loads(raw)
        if not isinstance(created, str) or not isinstance(decision_id, str):
            raise TypeError
        return _utc(datetime.fromisoformat(created)), decision_id
    except (binascii.Error, UnicodeDecodeError, TypeError, ValueError):
        raise FilterError("cursor", "cursor is not valid; pass next_cursor unchanged") from None


# -- queries ---------------------------------------------------------------------------------


def _filtered(filters: DecisionFilters) -> Select[Decision]:
    return select(Decision).where(*filters.conditions())


def _key() -> Any:
    return tuple_(Decision.created_at, Decision.id)


def after_condition(after: Position) -> ColumnElement[bool]:
    """Rows strictly after ``after`` in ascending ``(created_at, id)`` order."""
    condition: ColumnElement[bool] = _key() > (_utc(after[0]), after[1])
    return condition


def _position(decision: Decision) -> Position:
    return _utc(decision.created_at), decision.id


def search_decisions(
    session: Session, filters: DecisionFilters, *, limit: int, cursor: str | None = None
) -> tuple[list[Decision], str | None]:
    """One page, newest first, and the cursor of the next page (None on the last page)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    query = _filtered(filters)
    if cursor:
        created, decision_id = decode_cursor(cursor)
        query = query.where(_key() < (created, decision_id))
    query = query.order_by(Decision.created_at.desc(), Decision.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, encode_cursor(_position(page[-1]))


def count_decisions(session: Session, filters: DecisionFilters) -> int:
    query = select(func.count()).select_from(Decision).where(*filters.conditions())
    return session.scalar(query) or 0


def decisions_after(
    session: Session, filters: DecisionFilters, after: Position | None, size: int
) -> list[Decision]:
    """Up to ``size`` decisions after ``after``, oldest first (one keyset batch)."""
    query = _filtered(filters)
    if after is not None:
        query = query.where(after_condition(after))
    query = query.order_by(Decision.created_at, Decision.id).limit(size)
    return list(session.scalars(query))


def iter_decisions(
    session: Session, filters: DecisionFilters, batch: int = 1000
) -> Iterator[Decision]:
    """Every matching decision, oldest first, fetched ``batch`` rows at a time."""
    after: Position | None = None
    while True:
        rows = decisions_after(session, filters, after, batch)
        yield from rows
        if len(rows) < batch:
            return
        after = _position(rows[-1])


def iter_decision_batches(
    sessions: sessionmaker[Session], filters: DecisionFilters, batch: int = 1000
) -> Iterator[list[Decision]]:
    """Like ``iter_decisions`` but one short transaction per batch; rows come detached."""
    after: Position | None = None
    while True:
        with unit_of_work(sessions) as session:
            rows = decisions_after(session, filters, after, batch)
            session.expunge_all()
        if rows:
            yield rows
        if len(rows) < batch:
            return
        after = _position(rows[-1])
