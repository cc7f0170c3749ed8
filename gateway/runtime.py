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
from gateway.policy.active import (
    ActivePolicy,
    Enforcement,
    PolicyRefresher,
    check_bundle,
)
from gateway.policy.bundle import (
    PolicyBundle,
    bundle_version,
    load_bundle,
    parse_bundle,
    read_bundle_files,
)
from gateway.policy.seed import import_seed
from gateway.policy.store import active_ref, decode_files, get_row
from gateway.provenance.stamp import ProvenanceService
from gateway.safety.image_classifier import CompositeImageClassifier, ImageClassifier
from gateway.safety.image_concepts import ClipConceptChecker, Concept
from gateway.safety.image_nsfw import OpenNsfwDetector
from gateway.safety.prompt_classifier import PolicyPromptClassifier, PromptClassifier, TextEncoder
from gateway.safety.prompt_head import PromptHead, default_head_path
from gateway.safety.text_encoder import MiniLMEncoder
from gateway.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    audit: AuditLog
    decisions: DecisionWriter  # requests open and close decisions here (group commit)
    policy: ActivePolicy
    refresher: PolicyRefresher
    encoder: TextEncoder
    worker: GenerationWorker
    executor: ThreadPoolExecutor
    recovered: list[str]
    provenance: ProvenanceService  # C2PA signing credentials and the watermark key

    # the version in force right now; a request should take ``policy.current()`` once
    @property
    def bundle(self) -> PolicyBundle:
        return self.policy.current().bundle

    @property
    def prompt_classifier(self) -> PromptClassifier:
        return self.policy.current().prompt_classifier

    @property
    def image_classifier(self) -> ImageClassifier:
        return self.policy.current().image_classifier

    @property
    def models(self) -> ModelManager:
        return self.policy.current().models

    def close(self) -> None:
        self.refresher.stop()
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
    encoder = MiniLMEncoder(
        settings.prompt_encoder_dir,
        backend=settings.prompt_encoder_backend,
        onnx_cache_dir=settings.data_dir / "cache",
    )
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
    models = models or load_models(settings)
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    prompt_override = overrides.pop("prompt_classifier", None)
    image_override = overrides.pop("image_classifier", None)

    def build(version_id: int, bundle: PolicyBundle, previous: Enforcement | None) -> Enforcement:
        manager = (
            previous.models
            if previous is not None
            and previous.bundle.files.get("models.yaml") == bundle.files.get("models.yaml")
            else ModelManager(bundle.models, settings.resolved_model_dir)
        )
        if previous is None or manager is not previous.models:
            manager.prepare()
        return Enforcement(
            version_id=version_id,
            bundle=bundle,
            prompt_classifier=prompt_override
            or build_prompt_classifier(bundle, models.encoder, models.head),
            image_classifier=image_override
            or build_image_classifier(settings, bundle, models.nsfw),
            models=manager,
        )

    version_id, bundle = _load_active_bundle(settings, sessions, audit)
    policy = ActivePolicy(sessions, build, build(version_id, bundle, None))
    refresher = PolicyRefresher(policy, settings.policy_refresh_s)
    refresher.start()
    worker = GenerationWorker(settings.queue_size)
    worker.start()
    parts: dict[str, Any] = {
        "settings": settings,
        "engine": engine,
        "sessions": sessions,
        "audit": audit,
        "decisions": DecisionWriter(engine, audit),
        "policy": policy,
        "refresher": refresher,
        "encoder": models.encoder,
        "worker": worker,
        "executor": ThreadPoolExecutor(max_workers=4, thread_name_prefix="stage"),
        "recovered": recovered,
        "provenance": ProvenanceService.from_settings(settings),
    }
    parts.update(overrides)
    return Runtime(**parts)


def _load_active_bundle(
    settings: Settings, sessions: sessionmaker[Session], audit: AuditLog
) -> tuple[int, PolicyBundle]:
    """The version in force; on first start the seed folder is checked and imported as v1.

    A seed folder that differs from the version in force is only reported: policy changes go
    through drafts and a second person's approval (``gateway policy import``).
    """
    with unit_of_work(sessions) as session:
        ref = active_ref(session)
        if ref is None:
            seed = load_bundle(settings.policy_dir)
            check_bundle(seed)
            import_seed(session, seed)
            ref = active_ref(session)
        if ref is None:  # pragma: no cover - a version published in the future only
            raise RuntimeError("no policy version is in force")
        files = decode_files(get_row(session, ref.id).files)
    bundle = parse_bundle(files)
    check_bundle(bundle)
    if settings.policy_dir.is_dir():
        seed_files = read_bundle_files(settings.policy_dir)
        if bundle_version(seed_files) != bundle.version:
            log.warning(
                "the policy folder %s differs from policy version %d in force; import it with "
                "`gateway policy import` to propose it as a draft",
                settings.policy_dir,
                ref.id,
            )
    return ref.id, bundle
