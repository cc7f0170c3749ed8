"""The long-lived parts of a running gateway, built once from settings and passed around."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.audit.decisions import abort_open_decisions
from gateway.audit.events import AuditLog
from gateway.audit.keyring import ensure_registered
from gateway.audit.reconcile import Reconciler
from gateway.audit.signing import load_or_create_signer
from gateway.audit.writer import DecisionWriter
from gateway.db.engine import make_engine, make_session_factory, unit_of_work
from gateway.db.migrate import upgrade
from gateway.generation.models import BatchingConfig, ModelManager
from gateway.observability.metrics import GatewayMetrics, PolicyInForce
from gateway.pipeline.quarantine import QuarantineStore, quarantine_from_settings
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
from gateway.safety.artefacts import IMAGE_STAGE, PROMPT_STAGE, StageArtefacts
from gateway.safety.image_classifier import ImageClassifier
from gateway.safety.loader import (
    Models,
    build_image_classifier,
    build_image_stage,
    build_prompt_classifier,
    build_prompt_stage,
)
from gateway.safety.loader import load_models as _load_safety_models
from gateway.safety.prompt_classifier import PromptClassifier, TextEncoder
from gateway.settings import Settings
from gateway.shared_secrets import check_shared_secrets, replica_secrets

__all__ = [
    "Models",
    "Runtime",
    "build_image_classifier",
    "build_prompt_classifier",
    "build_runtime",
    "load_models",
]

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
    encoder: TextEncoder | None
    executor: ThreadPoolExecutor
    recovered: list[str]
    provenance: ProvenanceService  # C2PA signing credentials and the watermark key
    quarantine: QuarantineStore  # quarantined images, readable by every replica
    metrics: GatewayMetrics  # this runtime's Prometheus registry (GET /metrics)
    # the prompt classifier a draft bundle would get (its content cases run through it)
    draft_classifier: Callable[[PolicyBundle], PromptClassifier]
    reconciler: Reconciler | None = None  # closes decisions a database fault left open

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

    def waiting_images(self) -> dict[str, int]:
        """Images queued for generation per model, in the version in force (queue depth)."""
        return self.models.waiting_images()

    def close(self) -> None:
        if self.reconciler is not None:
            self.reconciler.stop()
        self.refresher.stop()
        self.policy.current().models.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.engine.dispose()


def limit_blas_threads(threads: int) -> None:
    """Cap the BLAS library numpy loaded (OpenBLAS, MKL...) at ``threads`` for this process.

    Measured on 2 cores: the prompt classifier cost 16.3 ms of CPU per prompt for 8.2 ms of
    wall time with OpenBLAS's default two threads (the second one spinning between calls) and
    6.5 ms for 6.5 ms with one; the spinning thread takes the core the generator runs on.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")  # kept for the life of the process


def build_runtime(settings: Settings, models: Models | None = None, **overrides: Any) -> Runtime:
    """Migrate the database, load policy and models, close decisions a crash left open."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    limit_blas_threads(settings.blas_threads)
    url = settings.resolved_database_url
    upgrade(url, settings.migrations_dir)
    engine = make_engine(
        url,
        sqlite_synchronous=settings.sqlite_synchronous,
        sqlite_busy_timeout_s=settings.sqlite_busy_timeout_s,
    )
    sessions = make_session_factory(engine)
    signer = load_or_create_signer(
        settings.data_dir,
        settings.audit_signing_key.get_secret_value() if settings.audit_signing_key else None,
    )
    audit = AuditLog(signer, settings.checkpoint_every)
    provenance = overrides.pop("provenance", None) or ProvenanceService.from_settings(settings)
    try:  # a replica whose key or shared secrets differ from the others' must not start
        with unit_of_work(sessions) as session:
            if ensure_registered(session, signer, auto_register=settings.audit_key_auto_register):
                log.info("registered this replica's audit signing key %s", signer.key_id)
        with unit_of_work(sessions) as session:
            check_shared_secrets(
                session,
                replica_secrets(settings, provenance.credentials.certificate_sha256),
                settings.instance_id,
            )
    except Exception:
        engine.dispose()
        raise
    with unit_of_work(sessions) as session:
        recovered = abort_open_decisions(
            session, audit, settings.instance_id, "the gateway stopped before this decision closed"
        )
    if recovered:
        log.warning("closed %d decision(s) left open by a crash as aborted", len(recovered))
    models = models or load_models(settings)
    batching = BatchingConfig(
        max_wait_s=settings.batch_max_wait_ms / 1000,
        max_waiting_images=settings.queue_size,
        torch_threads=settings.torch_threads,
        cpu_batch_invariant=settings.cpu_batch_invariant,
    )
    prompt_override = overrides.pop("prompt_classifier", None)
    image_override = overrides.pop("image_classifier", None)

    def build(version_id: int, bundle: PolicyBundle, previous: Enforcement | None) -> Enforcement:
        reuse = previous is not None and previous.bundle.files.get(
            "models.yaml"
        ) == bundle.files.get("models.yaml")
        if reuse:
            assert previous is not None
            return _enforcement(version_id, bundle, previous.models)
        manager = ModelManager(bundle.models, settings.resolved_model_dir, batching)
        try:  # a version that cannot be built leaves no owner threads or pipelines behind
            manager.prepare()
            enforcement = _enforcement(version_id, bundle, manager)
            if previous is not None and not manager.wait_warm(settings.generation_timeout_s):
                # the old version keeps serving while the new one warms; past this, switch
                log.warning("policy version %d: models still warming up", version_id)
        except BaseException:
            manager.close()
            raise
        if previous is not None:
            # the old models' owner threads stop once requests that took them can have ended
            retire = threading.Timer(settings.generation_timeout_s, previous.models.close)
            retire.daemon = True
            retire.start()
        return enforcement

    def _enforcement(version_id: int, bundle: PolicyBundle, manager: ModelManager) -> Enforcement:
        # an override (tests) replaces a stage, so the artefacts loaded do not describe it
        prompt, prompt_stage = (
            (prompt_override, StageArtefacts())
            if prompt_override is not None
            else build_prompt_stage(bundle, models)
        )
        image, image_stage = (
            (image_override, StageArtefacts())
            if image_override is not None
            else build_image_stage(settings, bundle, models)
        )
        return Enforcement(
            version_id=version_id,
            bundle=bundle,
            prompt_classifier=prompt,
            image_classifier=image,
            models=manager,
            stages={PROMPT_STAGE: prompt_stage, IMAGE_STAGE: image_stage},
        )

    def draft_classifier(bundle: PolicyBundle) -> PromptClassifier:
        if prompt_override is not None:
            return prompt_override  # type: ignore[no-any-return]
        return build_prompt_stage(bundle, models)[0]  # refuses to classify when unavailable

    version_id, bundle = _load_active_bundle(settings, sessions, audit)
    policy = ActivePolicy(sessions, build, build(version_id, bundle, None))
    refresher = PolicyRefresher(policy, settings.policy_refresh_s)
    refresher.start()
    metrics = GatewayMetrics()
    writer = DecisionWriter(
        engine,
        audit,
        retry_s=settings.audit_retry_s,
        backoff_s=settings.audit_retry_backoff_s,
        observer=metrics,
    )
    parts: dict[str, Any] = {
        "settings": settings,
        "engine": engine,
        "sessions": sessions,
        "audit": audit,
        "decisions": writer,
        "policy": policy,
        "refresher": refresher,
        "encoder": models.encoder,
        "executor": ThreadPoolExecutor(max_workers=4, thread_name_prefix="stage"),
        "recovered": recovered,
        "provenance": provenance,
        "quarantine": quarantine_from_settings(settings, sessions),
        "metrics": metrics,
        "draft_classifier": draft_classifier,
    }
    parts.update(overrides)
    runtime = Runtime(**parts)

    def in_force() -> PolicyInForce:
        enf = runtime.policy.current()
        return PolicyInForce(enf.version_id, enf.bundle.version)

    # read at scrape time: the batchers of the version in force (a new version, new batchers)
    runtime.metrics.watch(models=lambda: runtime.models.entries, waiting=runtime, policy=in_force)
    runtime.reconciler = Reconciler(
        sessions, audit, runtime.decisions, settings.instance_id, settings.reconcile_interval_s
    )
    runtime.reconciler.start()
    return runtime


def load_models(settings: Settings) -> Models:
    """Load the safety models on a thread that then ends (their start-up probe runs torch).

    torch's OpenMP thread team belongs to the thread that first ran it: once the main thread
    has run torch, pipelines run by the models' owner threads were measured up to 2.4x slower
    (docs/operators.md, §8a). The main thread of a gateway never runs torch.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-safety") as pool:
        return pool.submit(_load_safety_models, settings).result()


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
