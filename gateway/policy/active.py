"""The policy in force on this replica, and the thread that keeps it current.

Every replica polls the database for the active version (a one-row query) every
``policy_refresh_s`` seconds; when it changes, the replica loads the new bundle, checks it
(schema and its own policy tests), builds the classifiers it configures and swaps them in
with one reference assignment. A request takes one ``Enforcement`` snapshot at its start
and uses it throughout, so no request mixes two versions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from gateway.db.engine import unit_of_work
from gateway.generation.models import ModelManager
from gateway.periodic import PeriodicTask
from gateway.policy.bundle import PolicyBundle, parse_bundle
from gateway.policy.policy_tests import CaseResult, run_policy_tests
from gateway.policy.store import active_ref, decode_files, get_row, retire_superseded
from gateway.safety.artefacts import StageArtefacts
from gateway.safety.image_classifier import ImageClassifier
from gateway.safety.prompt_classifier import PromptClassifier

log = logging.getLogger(__name__)


class PolicyTestsFailed(Exception):
    """The bundle's own policy tests fail, so it cannot be activated."""

    def __init__(self, failed: list[CaseResult]) -> None:
        self.failed = failed
        lines = [f"  {r.file}: {r.name}: {'; '.join(r.failures)}" for r in failed]
        super().__init__(
            "the policy bundle's tests fail; refusing to activate it:\n" + "\n".join(lines)
        )


def check_bundle(bundle: PolicyBundle) -> None:
    failed = [r for r in run_policy_tests(bundle) if not r.passed]
    if failed:
        raise PolicyTestsFailed(failed)


@dataclass(frozen=True)
class Enforcement:
    """Everything a request needs from one policy version."""

    version_id: int
    bundle: PolicyBundle
    prompt_classifier: PromptClassifier
    image_classifier: ImageClassifier
    models: ModelManager
    # per classifier stage: the sha256 of the artefacts it was built from, or why it cannot run
    stages: dict[str, StageArtefacts] = field(default_factory=dict)


Builder = Callable[[int, PolicyBundle, "Enforcement | None"], Enforcement]


class ActivePolicy:
    """Holds the current ``Enforcement``; ``refresh`` swaps in a newly active version."""

    def __init__(self, sessions: sessionmaker[Session], build: Builder, first: Enforcement):
        self._sessions = sessions
        self._build = build
        self._current = first
        self._lock = threading.Lock()  # one refresh at a time; readers never wait

    def current(self) -> Enforcement:
        return self._current

    def refresh(self) -> bool:
        """Switch to the version now in force if it changed; True when it did."""
        with self._lock:
            with unit_of_work(self._sessions) as session:
                ref = active_ref(session)
                if ref is None or ref.id == self._current.version_id:
                    return False
                files = decode_files(get_row(session, ref.id).files)
                retire_superseded(session, ref)
            bundle = parse_bundle(files)
            check_bundle(bundle)
            self._current = self._build(ref.id, bundle, self._current)
            log.info("policy version %d (%s) is now in force", ref.id, bundle.version[:12])
            return True


class PolicyRefresher:
    """Background thread calling ``ActivePolicy.refresh`` every ``interval_s`` seconds."""

    def __init__(self, policy: ActivePolicy, interval_s: float) -> None:
        self._task = PeriodicTask(
            "policy-refresh", interval_s, policy.refresh, _refresh_failed, stop_timeout_s=5
        )

    def start(self) -> None:
        self._task.start()

    def stop(self) -> None:
        self._task.stop()


def _refresh_failed(exc: Exception) -> None:
    # keep enforcing the version in force; say why loudly
    log.error("could not switch to the newly active policy version", exc_info=exc)
