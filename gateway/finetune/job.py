"""One fine-tune job, start to finish, for the command line and the API alike.

gate (licence × intended use, through the chain the adapter will have) → base loaded (pins
checked) → training-set manifest → ``finetune.training_set`` audit event → training →
the adapter is loaded over a fresh base and generates one image → a policy draft registers
it, with the ``finetune.completed`` event in the same transaction. A refusal is recorded as
``finetune.refused``. Nothing is served until legal submits the draft and a second person
approves it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gateway.audit.events import AuditLog
from gateway.db.engine import unit_of_work
from gateway.domain import INTENDED_USES
from gateway.finetune.gate import FinetuneInvalid, FinetuneRefused, check_finetune, files_with
from gateway.finetune.manifest import TrainingSet, scan
from gateway.finetune.train import (
    ADAPTER_FILE,
    Progress,
    ShouldStop,
    TrainConfig,
    TrainResult,
    train_lora,
)
from gateway.generation.loader import load_adapter, load_model
from gateway.generation.pins import hash_weight_files
from gateway.generation.run import GenerationParams, run_pipeline
from gateway.policy.bundle import PolicyBundle, parse_bundle
from gateway.policy.schema import ModelEntry
from gateway.policy.store import active_ref, decode_files, get_row
from gateway.policy.workflow import record_draft
from gateway.provenance.stamp import ProvenanceService

Stage = Callable[[str], None]


class FinetuneError(Exception):
    """The job cannot run (not a licence refusal); ``param`` names the input at fault."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class FinetuneSpec:
    base: str
    images: Path
    rights: str
    name: str
    rights_note: str | None = None
    intended_use: str | None = None  # None: the policy's default use
    config: TrainConfig = field(default_factory=TrainConfig)
    resolution_given: bool = False  # else the base's first registered size
    by: str = "cli:operator"  # who proposes the draft
    facts: dict[str, Any] = field(default_factory=dict)
    tenant_id: str | None = None


@dataclass(frozen=True)
class FinetuneOutcome:
    name: str
    draft_id: int
    adapter: Path
    adapter_sha256: str
    manifest: dict[str, Any]
    train: TrainResult
    licence: str


@dataclass(frozen=True)
class Deps:
    """What a job needs from the deployment."""

    sessions: sessionmaker[Session]
    audit: AuditLog
    model_dir: Path
    policy_dir: Path
    provenance: ProvenanceService | None


def adapter_dir(model_dir: Path, name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "adapter"
    return model_dir / "loras" / slug


def _active(deps: Deps) -> tuple[int, PolicyBundle]:
    with unit_of_work(deps.sessions) as session:
        ref = active_ref(session)
        if ref is None:
            raise FinetuneError("no policy version is in force yet: start the gateway once", "")
        return ref.id, parse_bundle(decode_files(get_row(session, ref.id).files))


def _record(deps: Deps, spec: FinetuneSpec, kind: str, body: dict[str, Any]) -> None:
    with unit_of_work(deps.sessions) as session:
        deps.audit.append(
            session,
            kind,
            {"name": spec.name, "base": spec.base, "by": spec.by, **body},
            tenant_id=spec.tenant_id,
        )


def run_finetune(
    spec: FinetuneSpec,
    deps: Deps,
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    stage: Stage | None = None,
) -> FinetuneOutcome:
    """Run the job; raises FinetuneRefused, FinetuneError, TrainingCancelled."""
    say = stage or (lambda _s: None)
    say("validating")
    version_id, bundle = _active(deps)
    use = spec.intended_use or bundle.uses.default
    if use not in INTENDED_USES:
        raise FinetuneError(f"unknown intended use {use!r}", "intended_use")
    folder = adapter_dir(deps.model_dir, spec.name)
    rel_source = f"{folder.relative_to(deps.model_dir).as_posix()}/{ADAPTER_FILE}"
    try:
        plan = check_finetune(
            bundle,
            deps.policy_dir,
            name=spec.name,
            base=spec.base,
            rights=spec.rights,
            rights_note=spec.rights_note,
            intended_use=use,
            facts=spec.facts,
            source_path=rel_source,
        )
    except FinetuneInvalid as exc:
        raise FinetuneError(str(exc), exc.param) from None
    except FinetuneRefused as refused:
        _record(
            deps,
            spec,
            "finetune.refused",
            {
                "intended_use": use,
                "rights": spec.rights,
                "reason": str(refused),
                "reasons": [r.to_json() for r in refused.reasons],
            },
        )
        raise
    base_entry = bundle.models.models[spec.base]
    base = load_model(spec.base, base_entry, deps.model_dir)  # ModelUnavailable if not intact
    try:
        training = scan(
            spec.images, rights=spec.rights, rights_note=spec.rights_note, service=deps.provenance
        )
    except ValueError as exc:
        raise FinetuneError(str(exc), "images") from None
    config = spec.config
    if not spec.resolution_given:
        config = replace(config, resolution=int(base_entry.sizes[0].split("x")[0]))
    _record(
        deps,
        spec,
        "finetune.training_set",
        {
            "intended_use": use,
            "base_weights_sha256": base.weights_sha256,
            "base_licence": base_entry.licence,
            "adapter_licence": plan.entry["licence"],
            "policy_version": version_id,
            "training": asdict(config),
            "manifest": training.manifest,
        },
    )
    say("running")
    base_sha, pipeline = base.weights_sha256, base.pipeline
    del base  # only the pipeline is trained; the check below loads a fresh base
    result = train_lora(
        pipeline,
        [(i.path, i.caption) for i in training.images],
        config,
        folder,
        resume_key=config.key(training.sha256, base_sha),
        progress=progress,
        should_stop=should_stop,
    )
    del pipeline  # the trained copy (with the LoRA layers inside) is no longer needed
    say("checking")
    entry = {**plan.entry, "pins": hash_weight_files(result.adapter)}
    _check_loads(spec, entry, base_entry, deps.model_dir, training)
    return _open_draft(spec, deps, use, version_id, entry, plan.extra_files, training, result)


def _check_loads(
    spec: FinetuneSpec,
    entry: dict[str, Any],
    base_entry: ModelEntry,
    model_dir: Path,
    training: TrainingSet,
) -> None:
    """Load the adapter over a freshly loaded base, through the serving loader, and
    generate one image with it."""
    fresh = load_model(spec.base, base_entry, model_dir)
    adapter = load_adapter(spec.name, ModelEntry.model_validate(entry), model_dir, fresh)
    width, height = (int(v) for v in entry["sizes"][0].split("x"))
    run_pipeline(
        adapter, GenerationParams(training.images[0].caption, None, 1, width, height, 1, 0)
    )


def _open_draft(
    spec: FinetuneSpec,
    deps: Deps,
    use: str,
    version_id: int,
    entry: dict[str, Any],
    extra: dict[str, str],
    training: TrainingSet,
    result: TrainResult,
) -> FinetuneOutcome:
    with unit_of_work(deps.sessions) as session:
        files = decode_files(get_row(session, version_id).files)
        draft_files = files_with(files, spec.name, entry, extra)
        parse_bundle(draft_files)  # PolicyError if the entry does not validate
        digest = next(iter(entry["pins"].values()))
        row = record_draft(
            session,
            deps.audit,
            draft_files,
            by=spec.by,
            note=f"register LoRA adapter {spec.name} over {spec.base} ({entry['licence']}; "
            f"training images: {spec.rights}, {training.manifest['count']} images, manifest "
            f"{training.sha256[:12]})",
            source="finetune",
        )
        deps.audit.append(
            session,
            "finetune.completed",
            {
                "name": spec.name,
                "base": spec.base,
                "by": spec.by,
                "intended_use": use,
                "draft": row.id,
                "adapter_sha256": digest,
                "manifest_sha256": training.sha256,
                "steps": result.steps,
                "final_loss": result.final_loss,
            },
            tenant_id=spec.tenant_id,
        )
        draft_id = row.id
    return FinetuneOutcome(
        spec.name, draft_id, result.adapter, digest, training.manifest, result, entry["licence"]
    )
