"""Verifying the audit trail: recompute everything and name the first sequence that fails.

From the start (genesis) or from the last signed checkpoint: every event's sequence must be
contiguous, its stored ``prev_hash`` must be the previous chain hash, its chain hash must
recompute from its own bytes, the sequence inside its payload must be its own, and at each
checkpoint the recomputed chain head and Merkle root must equal the signed ones. Each
checkpoint's signature is checked with the key its key id names: by default any key
registered in ``audit_keys`` (:mod:`gateway.audit.keyring`; a retired key only up to the size
it was retired at), or only the one key given (an auditor's pinned key). Sizes only grow; the
trail must not end below a checkpoint.

Then (unless ``rows=False``) every ``decisions`` and ``personal_data`` row is checked against
the events that commit to it (:mod:`gateway.audit.rows`): a mismatch names the decision, the
table and the field. The whole check reads one snapshot (PostgreSQL ``REPEATABLE READ``; on
SQLite the transaction holds the database), so decisions closing meanwhile are not findings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.audit.events import chain_hash, checkpoint_json, checkpoint_note, leaf_hash
from gateway.audit.keyring import KeyRing
from gateway.audit.merkle import Frontier
from gateway.audit.rows import Findings, RowError, check_all, load_erasures
from gateway.db.models import AuditCheckpoint, AuditEvent, AuditHead

GENESIS = "0" * 64
_SEQ = re.compile(r'"seq":(\d+)')


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    size: int
    events_checked: int
    checkpoints_checked: int
    started_at: int  # 0 = genesis, else the trusted checkpoint's size
    checkpoint: dict[str, Any] | None  # the last checkpoint the trail was checked against
    first_bad_seq: int | None = None
    reason: str | None = None
    rows_checked: int = 0  # decisions checked against their events (0: rows not checked)
    row_errors: tuple[RowError, ...] = ()  # the first findings (at most rows.MAX_ERRORS)
    row_error_count: int = 0
    rows_verified: bool = False  # whether the row checks ran
    first_bad_decision_id: str | None = None  # the decision of the event at first_bad_seq
    signing_keys: tuple[str, ...] = ()  # key ids of the checkpoints' signers, in order

    @property
    def chain_ok(self) -> bool:
        return self.first_bad_seq is None and self.reason is None

    @property
    def summary(self) -> str:
        if not self.chain_ok:
            rows = f"; also {self.row_error_count} row finding(s)" if self.row_error_count else ""
            return f"audit trail BROKEN at seq {self.first_bad_seq}: {self.reason}{rows}"
        if self.row_error_count:
            return (
                f"audit rows DO NOT MATCH the trail: {self.row_error_count} finding(s) in "
                f"{self.rows_checked} decision(s) checked (chain of {self.size} events intact); "
                f"first: {self.row_errors[0]}"
            )
        rows = (
            f", {_count(self.rows_checked, 'decision row')} "
            f"{'matches its' if self.rows_checked == 1 else 'match their'} events"
            if self.rows_verified
            else ", decision rows not checked"
        )
        anchor = (
            f"checkpoint {self.checkpoint['size']} (root {self.checkpoint['merkle_root'][:16]}…)"
            if self.checkpoint
            else "none"
        )
        return (
            f"audit trail intact: {_count(self.size, 'event')}, {self.events_checked} checked "
            f"from {'genesis' if self.started_at == 0 else f'checkpoint {self.started_at}'}, "
            f"{_count(self.checkpoints_checked, 'signed checkpoint')} verified, "
            f"last: {anchor}{rows}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary,
            "size": self.size,
            "events_checked": self.events_checked,
            "checkpoints_checked": self.checkpoints_checked,
            "started_at": self.started_at,
            "checkpoint": self.checkpoint,
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
            "first_bad_decision_id": self.first_bad_decision_id,
            "signing_keys": list(self.signing_keys),
            "rows_verified": self.rows_verified,
            "rows_checked": self.rows_checked,
            "row_error_count": self.row_error_count,
            "row_errors": [e.to_json() for e in self.row_errors],
        }


class _Broken(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


def verify_trail(
    session: Session,
    keys: str | KeyRing | None = None,
    *,
    from_last_checkpoint: bool = False,
    rows: bool = True,
    batch: int = 5000,
) -> VerifyReport:
    """Verify the chain and checkpoints, then (``rows``) every decision row against them.

    ``keys``: None, the keys registered in the database (read in the same snapshot); a
    base64 public key, only that key.

    ``from_last_checkpoint`` skips the events before the last checkpoint, not the rows: the
    rows are updated in place and no checkpoint covers them.
    """
    _snapshot(session)
    ring = (
        KeyRing.registered(session)
        if keys is None
        else KeyRing.single(keys)
        if isinstance(keys, str)
        else keys
    )
    checkpoints = list(session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.size)))
    head = session.get(AuditHead, 1)
    size = head.seq if head else 0
    state = _State(checkpoints)
    try:
        _check_signatures(checkpoints, ring)
        if from_last_checkpoint and checkpoints:
            state.start_from(checkpoints[-1])
        _walk(session, state, batch)
        last = state.next_seq - 1
        if checkpoints and last < checkpoints[-1].size:
            raise _Broken(
                last + 1,
                f"trail truncated: it ends at seq {last} but checkpoint "
                f"{checkpoints[-1].size} was signed",
            )
        if last != size:
            raise _Broken(
                min(last, size) + 1,
                f"the head says {size} events but the trail has {last}: rows missing at the end",
            )
    except _Broken as broken:
        bad_seq: int | None = broken.seq
        reason: str | None = broken.reason
        bad_decision = session.scalar(
            select(AuditEvent.decision_id).where(AuditEvent.seq == broken.seq)
        )
    else:
        bad_seq = reason = bad_decision = None
    findings = Findings()
    if rows:
        check_all(session, load_erasures(session), findings)
    return VerifyReport(
        bad_seq is None and findings.count == 0,
        size,
        state.checked,
        state.checkpoints_ok,
        state.started_at,
        state.anchor,
        bad_seq,
        reason,
        findings.rows_checked,
        tuple(findings.errors),
        findings.count,
        rows,
        bad_decision,
        tuple(dict.fromkeys(cp.key_id for cp in checkpoints)),
    )


def _snapshot(session: Session) -> None:
    """Read everything from one snapshot (PostgreSQL; SQLite's transaction already is one)."""
    if session.get_bind().dialect.name == "postgresql" and not session.in_transaction():
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


class _State:
    def __init__(self, checkpoints: list[AuditCheckpoint]) -> None:
        self.by_size = {cp.size: cp for cp in checkpoints}
        self.next_seq = 1
        self.head = GENESIS
        self.frontier = Frontier()
        self.checked = 0
        self.checkpoints_ok = 0
        self.started_at = 0
        self.anchor: dict[str, Any] | None = None
        self.last_good_checkpoint = 0

    def start_from(self, cp: AuditCheckpoint) -> None:
        self.frontier = Frontier.from_json(cp.size, json.loads(cp.frontier))
        if self.frontier.root().hex() != cp.merkle_root:
            raise _Broken(cp.size, f"checkpoint {cp.size}: its frontier does not give its root")
        self.head = cp.chain_head
        self.next_seq = cp.size + 1
        self.started_at = self.last_good_checkpoint = cp.size
        self.checkpoints_ok = 1
        self.anchor = checkpoint_json(cp)


def _check_signatures(checkpoints: list[AuditCheckpoint], ring: KeyRing) -> None:
    for cp in checkpoints:
        root = bytes.fromhex(cp.merkle_root)
        if cp.note != checkpoint_note(cp.size, root, cp.chain_head):
            raise _Broken(cp.size, f"checkpoint {cp.size}: its note does not match its fields")
        try:
            frontier_ok = Frontier.from_json(cp.size, json.loads(cp.frontier)).root() == root
        except (ValueError, TypeError, KeyError, IndexError):
            frontier_ok = False
        if not frontier_ok:
            raise _Broken(cp.size, f"checkpoint {cp.size}: its frontier does not give its root")
        problem = ring.problem(cp)
        if problem is not None:
            raise _Broken(cp.size, f"checkpoint {cp.size}: {problem}")


def _walk(session: Session, state: _State, batch: int) -> None:
    after = state.next_seq - 1
    while True:
        rows = session.execute(
            select(AuditEvent.seq, AuditEvent.payload, AuditEvent.prev_hash, AuditEvent.chain_hash)
            .where(AuditEvent.seq > after)
            .order_by(AuditEvent.seq)
            .limit(batch)
        ).all()
        if not rows:
            return
        for seq, payload, prev_hash, stored in rows:
            _check_event(state, seq, payload, prev_hash, stored)
        after = rows[-1][0]


def _check_event(state: _State, seq: int, payload: str, prev_hash: str, stored: str) -> None:
    if seq != state.next_seq:
        raise _Broken(state.next_seq, f"row missing: expected seq {state.next_seq}, found {seq}")
    inner = _SEQ.search(payload)
    if inner is None or int(inner.group(1)) != seq:
        raise _Broken(
            seq, f"row reordered: its payload belongs to seq {inner.group(1) if inner else '?'}"
        )
    if prev_hash != state.head:
        raise _Broken(
            seq, "row inserted or removed before it: prev_hash does not link to the previous event"
        )
    if chain_hash(seq, prev_hash, payload) != stored:
        raise _Broken(seq, "payload changed: its hash does not match the chain")
    state.head = stored
    state.frontier.append(leaf_hash(payload))
    state.next_seq += 1
    state.checked += 1
    cp = state.by_size.get(seq)
    if cp is not None:
        if cp.chain_head != state.head or cp.merkle_root != state.frontier.root().hex():
            raise _Broken(
                state.last_good_checkpoint + 1,
                f"history rewritten: events {state.last_good_checkpoint + 1}..{seq} do "
                f"not match the signed checkpoint at size {seq}",
            )
        state.checkpoints_ok += 1
        state.last_good_checkpoint = seq
        state.anchor = checkpoint_json(cp)


def _count(n: int, noun: str) -> str:
    """``1 event``, ``2 events``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
