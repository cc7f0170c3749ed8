"""Each replica closes its own decisions that a fault left open, as soon as it can.

A decision stays open when its closing write failed for longer than the writer's retry
window (the database was down or locked), or when an opening write's fate is unknown (the
connection died around the commit). Its client got 503 ``audit_unavailable`` (or 500) and
no image. The :class:`Reconciler` thread looks every ``interval_s`` seconds for decisions
that are ``open``, belong to this replica (``instance_id``) and are not in flight in this
process, and closes each as ``failed`` with the reason recorded: the error that stopped the
write, the close that was intended (outcome, status) and the record gathered so far. While
the database is still down it simply tries again at the next tick.

Other replicas' decisions are left alone (they may still be running); decisions left open by
a process that died are closed as ``aborted`` at its next start
(:func:`gateway.audit.decisions.abort_open_decisions`).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit.decisions import DecisionAlreadyClosed, close_decision
from gateway.audit.events import AuditLog
from gateway.audit.stuck import Stuck
from gateway.audit.writer import DecisionWriter
from gateway.db.engine import unit_of_work
from gateway.db.faults import describe
from gateway.db.models import Decision
from gateway.periodic import PeriodicTask

log = logging.getLogger(__name__)

UNKNOWN = Stuck(
    "the decision was left open with no request in flight in this process",
    0,  # no answer is known
)


def failed_close(stuck: Stuck) -> dict[str, Any]:
    """The close of a stuck decision: outcome ``failed``, the reason among its errors."""
    record = dict(stuck.record or {})
    record["errors"] = [
        *record.get("errors", []),
        {"stage": "audit", "message": f"the decision could not be closed: {stuck.reason}"},
    ]
    if stuck.intended is not None:
        record["intended"] = stuck.intended  # what would have been recorded (not delivered)
    return {
        "outcome": "failed",
        "http_status": stuck.answered,
        "error_code": {503: "audit_unavailable", 500: "internal_error"}.get(
            stuck.answered, "failed"
        ),
        "record": record,
    }


class Reconciler:
    """Background thread closing this replica's stuck decisions as ``failed``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        audit: AuditLog,
        writer: DecisionWriter,
        instance_id: str,
        interval_s: float,
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._writer = writer
        self._instance_id = instance_id
        self._task = PeriodicTask("reconciler", interval_s, self.run_once, _tick_failed)
        self.closed = 0  # decisions closed as failed so far

    def start(self) -> None:
        self._task.start()

    def stop(self) -> None:
        self._task.stop()

    def run_once(self) -> list[str]:
        """One pass; returns the decisions it closed as ``failed``."""
        stuck_before = self._writer.stuck()  # their writes are over: the rows are final
        with self._sessions() as session:
            open_ids = set(
                session.scalars(
                    select(Decision.id).where(
                        Decision.status == "open", Decision.instance_id == self._instance_id
                    )
                )
            )
        in_flight = self._writer.in_flight()  # read after: anything opened since is in it
        stuck_now = self._writer.stuck()
        closed: list[str] = []
        settled = {d for d in stuck_before if d not in open_ids}
        for decision_id in sorted(open_ids - in_flight):
            stuck = stuck_now.get(decision_id, UNKNOWN)
            close = failed_close(stuck)
            try:
                with unit_of_work(self._sessions) as session:
                    close_decision(session, self._audit, decision_id, **close)
            except DecisionAlreadyClosed:
                pass  # closed by its own request after all
            except Exception as exc:
                log.warning("reconciler: could not close %s: %s", decision_id, describe(exc))
                continue
            else:
                closed.append(decision_id)
                self._writer.observe_closed(close["outcome"], close["record"])
            settled.add(decision_id)
        self._writer.forget(settled)
        if closed:
            self.closed += len(closed)
            log.warning("closed %d decision(s) left open by a fault as failed", len(closed))
        return closed


def _tick_failed(exc: Exception) -> None:
    # the database is still down: the next tick tries again
    log.warning("reconciler: could not read open decisions: %s", describe(exc))
