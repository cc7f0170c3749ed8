"""Verifying an export's rows as it streams, and saying so in each row.

Before the first row, the chain is verified from the last signed checkpoint (its signature,
every checkpoint's signature, and each event since); each batch of rows is then checked
against its events and ``personal_data`` (:func:`gateway.audit.rows.check_ids`, which also
recomputes each of those events' own chain hash). Every exported row carries the outcome in
its last three columns:

- ``verified``: true when the chain from the checkpoint verified and the row matched its
  events; false otherwise, or when the export could not be verified (no public key);
- ``verified_checkpoint``: the size of the signed checkpoint the chain was verified against
  (empty when the trail has none yet: verified from its start);
- ``verification_error``: why not, for the first finding (empty when verified).

Cost: three indexed reads per batch of 1,000 rows and one JSON parse per event; memory stays
constant. The full chain walk from genesis is ``gateway audit verify``'s job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gateway.audit.export_format import COLUMNS, Row
from gateway.audit.keyring import KeyRing
from gateway.audit.rows import Erasure, Findings, check_ids, load_erasures
from gateway.audit.verify import verify_trail
from gateway.db.engine import unit_of_work

VERIFY_COLUMNS = ("verified", "verified_checkpoint", "verification_error")
_ID = COLUMNS.index("decision_id")
_KEEP = len(COLUMNS) - len(VERIFY_COLUMNS)


def verified_batches(
    sessions: sessionmaker[Session],
    batches: Iterable[list[Row]],
    public_key: str | KeyRing | None,
    *,
    verify: bool = True,
) -> Iterator[list[Row]]:
    """``batches`` with each row's verification columns filled in."""
    if not verify:
        yield from _stamped(batches, False, None, "not verified: skipped on request")
        return
    if public_key is None:
        yield from _stamped(batches, False, None, "not verified: no public key was given")
        return
    with unit_of_work(sessions) as session:
        report = verify_trail(session, public_key, from_last_checkpoint=True, rows=False)
        erasures = load_erasures(session)
    anchor = report.checkpoint["size"] if report.checkpoint else None
    if not report.ok:
        yield from _stamped(batches, False, anchor, f"audit trail: {report.summary}")
        return
    for rows in batches:
        yield _checked(sessions, rows, erasures, anchor)


def _checked(
    sessions: sessionmaker[Session],
    rows: list[Row],
    erasures: dict[str, Erasure],
    anchor: int | None,
) -> list[Row]:
    findings = Findings()
    with unit_of_work(sessions) as session:
        check_ids(session, [row[_ID] for row in rows], erasures, findings)
    first: dict[str | None, str] = {}
    for error in findings.errors:
        first.setdefault(error.decision_id, f"{error.field}: {error.reason}")
    if findings.count > len(findings.errors):  # more than MAX_ERRORS in one batch
        unknown = "not verified: too many findings in this batch"
        return [_with(row, False, anchor, first.get(row[_ID], unknown)) for row in rows]
    return [_with(row, row[_ID] not in first, anchor, first.get(row[_ID])) for row in rows]


def _stamped(
    batches: Iterable[list[Row]], ok: bool, anchor: int | None, why: str | None
) -> Iterator[list[Row]]:
    for rows in batches:
        yield [_with(row, ok, anchor, why) for row in rows]


def _with(row: Row, ok: bool, anchor: int | None, why: str | None) -> tuple[Any, ...]:
    return (*row[:_KEEP], ok, anchor, why)
