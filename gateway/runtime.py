"""The long-lived parts of a running gateway, built once from settings and passed around."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit.decisions import abort_open_decisions
from gateway.audit.events import AuditLog
from gateway.audit.signing import load_or_create_signer
from gateway.audit.writer import DecisionWriter
from gateway.db.engine import make_engine, make_session_factory, unit_of_work
from gateway.db.migrate import upgrade
from gateway.generation.models import ModelManager
from gateway.generation.worker import GenerationWorker
from gateway.policy.bundle import PolicyBundle, load_bundle
from gateway.policy.policy_tests import CaseResult, run_policy_tests
from gateway.safety.image_classifier import CompositeImageClassifier, ImageClassifier
from gateway.safety.image_concepts import ClipConceptChecker, Concept
from gateway.safety.image_nsfw import OpenNsfwDetector
from gateway.safety.prompt_classifier import PolicyPromptClassifier, PromptClassifier, TextEncoder
from gateway.safety.prompt_head import PromptHead, default_head_path
from gateway.safety.text_encoder import MiniLMEncoder
from gateway.settings import Settings

log = logging.getLogger(__name__)


class PolicyTestsFailed(Exception):
    """The bundle's own policy tests fail, so it cannot be activated."""

    def __init__(self, failed: list[CaseResult]) -> None:
        self.failed = failed
        lines = [f"  {r.file}: {r.name}: {'; '.join(r.failures)}" for r in failed]
        super().__init__(
            "the policy bundle's tests fail; refusing to activate it:\n" + "\n".join(lines)
        )


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    audit: AuditLog
    decisions: DecisionWriter  # requests open and close decisions here (group commit)
    bundle: PolicyBundle
    encoder: TextEncoder
    prompt_classifier: PromptClassifier
    image_classifier: ImageClassifier
    models: ModelManager
    worker: GenerationWorker
    executor: ThreadPoolExecutor
    recovered: list[str]

    def close(self) -> None:
        self.worker.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()


@dataclass(frozen=True)
class Models:
    """The heavy, policy-independent models; tests build them once and share them."""

    encoder: TextEncoder
    nsfw: OpenNsfwDetector | None
    head: PromptHead | None


def load_models(settings: Settings) -> Models:
    encoder = MiniLMEncoder(settings.prompt_encoder_dir)
    nsfw = OpenNsfwDetector() if settings.nsfw_detector else None
    path = settings.prompt_head or default_head_path()
    head = PromptHead.load(path) if path.is_file() else None
    if head is None:
        log.warning("no trained prompt head at %s: terms and exemplars only", path)
    return Models(encoder=encoder, nsfw=nsfw, head=head)


def build_prompt_classifier(
    bundle: PolicyBundle, encoder: TextEncoder, head: PromptHead | None
) -> PromptClassifier:
    return PolicyPromptClassifier(encoder, bundle.content, head)


def build_image_classifier(
    settings: Settings, bundle: PolicyBundle, nsfw: OpenNsfwDetector | None
) -> ImageClassifier:
    image_policy = bundle.content.image
    concepts = None
    if settings.clip_dir is not None:
        concepts = ClipConceptChecker(
            settings.clip_dir,
            [
                Concept(c.text, c.category, c.threshold, c.special_care)
                for c in image_policy.concepts
            ],
            special_care_adjustment=image_policy.special_care_adjustment,
        )
    return CompositeImageClassifier(nsfw, concepts, image_policy.nsfw_detector_category)


def build_runtime(settings: Settings, models: Models | None = None, **overrides: Any) -> Runtime:
    """Migrate the database, load policy and models, close decisions a crash left open."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    upgrade(url, settings.migrations_dir)
    engine = make_engine(url, sqlite_synchronous=settings.sqlite_synchronous)
    sessions = make_session_factory(engine)
    signer = load_or_create_signer(
        settings.data_dir,
        settings.audit_signing_key.get_secret_value() if settings.audit_signing_key else None,
    )
    audit = AuditLog(signer, settings.checkpoint_every)
    with unit_of_work(sessions) as session:
        recovered = abort_open_decisions(
            session, audit, settings.instance_id, "the gateway stopped before this decision closed"
        )
    if recovered:
        log.warning("closed %d decision(s) left open by a crash as aborted", len(recovered))
    bundle = load_bundle(settings.policy_dir)
    failed = [r for r in run_policy_tests(bundle) if not r.passed]
    if failed:
        raise PolicyTestsFailed(failed)
    models = models or load_models(settings)
    manager = ModelManager(bundle.models, settings.resolved_model_dir)
    manager.prepare()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    worker = GenerationWorker(settings.queue_size)
    worker.start()
    parts: dict[str, Any] = {
        "settings": settings,
        "engine": engine,
        "sessions": sessions,
        "audit": audit,
        "decisions": DecisionWriter(engine, audit),
        "bundle": bundle,
        "encoder": models.encoder,
        "prompt_classifier": build_prompt_classifier(bundle, models.encoder, models.head),
        "image_classifier": build_image_classifier(settings, bundle, models.nsfw),
        "models": manager,
        "worker": worker,
        "executor": ThreadPoolExecutor(max_workers=4, thread_name_prefix="stage"),
        "recovered": recovered,
    }
    parts.update(overrides)
    return Runtime(**parts)
