"""Fine-tuning jobs behind the API: queued, run one at a time in the server process, with
status and progress kept as one JSON file per job under ``<data dir>/fine_tuning/jobs``.

Training images are read from folders under ``<data dir>/fine_tuning/images`` (the API names
a folder there; it never reads a path the caller chooses). A job that was running when the
process stopped is reported ``failed`` (``interrupted``) on the next start; submitting it
again with the same inputs resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gateway.domain import Principal, Role
from gateway.errors import GatewayError
from gateway.finetune.gate import FinetuneRefused
from gateway.finetune.job import Deps, FinetuneError, FinetuneSpec, run_finetune
from gateway.finetune.train import TrainConfig, TrainingCancelled
from gateway.runtime import Runtime

ACTIVE = ("validating_files", "queued", "running")
JOB_ID = re.compile(r"ftjob-[0-9a-f]{24}")
FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class FineTuningService:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        root = runtime.settings.data_dir / "fine_tuning"
        self.images_root = root / "images"
        self._jobs = root / "jobs"
        self._jobs.mkdir(parents=True, exist_ok=True)
        self.images_root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._cancel: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fine-tuning")
        for path in self._jobs.glob("ftjob-*.json"):  # left running by a stopped process
            job = json.loads(path.read_text(encoding="utf-8"))
            if job["status"] in ACTIVE:
                self._finish(
                    job,
                    "failed",
                    error={
                        "code": "interrupted",
                        "param": None,
                        "message": "the gateway stopped; submit again to resume",
                    },
                )

    # -- storage ---------------------------------------------------------------------------
    def _path(self, job_id: str) -> Path:
        return self._jobs / f"{job_id}.json"

    def _save(self, job: dict[str, Any]) -> None:
        with self._lock:
            tmp = self._path(job["id"]).with_suffix(".tmp")
            tmp.write_text(json.dumps(job, indent=1, sort_keys=True), encoding="utf-8")
            tmp.replace(self._path(job["id"]))

    def _finish(self, job: dict[str, Any], status: str, **fields: Any) -> None:
        job.update(status=status, finished_at=int(time.time()), **fields)
        self._save(job)

    def get(self, principal: Principal, job_id: str) -> dict[str, Any]:
        path = self._path(job_id)
        if JOB_ID.fullmatch(job_id) is None or not path.is_file():
            raise GatewayError(404, "fine_tuning_job_not_found", f"no fine-tuning job {job_id}")
        job: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if job["tenant_id"] != principal.tenant_id and Role.ADMIN not in principal.roles:
            raise GatewayError(404, "fine_tuning_job_not_found", f"no fine-tuning job {job_id}")
        return job

    # -- actions ---------------------------------------------------------------------------
    def create(
        self,
        principal: Principal,
        *,
        model: str,
        training_file: str,
        suffix: str,
        rights: str,
        rights_note: str | None,
        intended_use: str | None,
        config: TrainConfig,
        resolution_given: bool,
    ) -> dict[str, Any]:
        if (
            FOLDER.fullmatch(training_file) is None
            or not (self.images_root / training_file).is_dir()
        ):
            raise GatewayError(
                422,
                "invalid_training_file",
                f"training_file must name a folder under {self.images_root}",
                param="training_file",
            )
        job_id = "ftjob-" + secrets.token_hex(12)
        job: dict[str, Any] = {
            "id": job_id,
            "object": "fine_tuning.job",
            "model": model,
            "created_at": int(time.time()),
            "finished_at": None,
            "fine_tuned_model": None,
            "organization_id": principal.tenant_id,
            "tenant_id": principal.tenant_id,
            "status": "validating_files",
            "training_file": training_file,
            "validation_file": None,
            "result_files": [],
            "trained_tokens": None,
            "seed": config.seed,
            "hyperparameters": {
                "n_steps": config.steps,
                "rank": config.rank,
                "resolution": config.resolution if resolution_given else None,  # None: base's
                "learning_rate": config.learning_rate,
                "batch_size": config.batch_size,
            },
            "error": None,
            "progress": {"step": 0, "total_steps": config.steps, "loss": None},
            "governance": {
                "name": suffix,
                "rights": rights,
                "rights_note": rights_note,
                "intended_use": intended_use,
                "draft_id": None,
            },
        }
        self._save(job)
        spec = FinetuneSpec(
            base=model,
            images=self.images_root / training_file,
            rights=rights,
            name=suffix,
            rights_note=rights_note,
            intended_use=intended_use,
            config=config,
            resolution_given=resolution_given,
            by=f"key:{principal.key_id}",
            facts=dict(principal.tenant_facts),
            tenant_id=principal.tenant_id,
        )
        self._pool.submit(self._run, job, spec)
        return job

    def cancel(self, principal: Principal, job_id: str) -> dict[str, Any]:
        job = self.get(principal, job_id)
        if job["status"] not in ACTIVE:
            raise GatewayError(
                409, "fine_tuning_job_not_active", f"job {job_id} is {job['status']}"
            )
        self._cancel.add(job_id)
        job["status_requested"] = "cancelled"
        return job

    def _run(self, job: dict[str, Any], spec: FinetuneSpec) -> None:
        settings = self._rt.settings
        deps = Deps(
            self._rt.sessions,
            self._rt.audit,
            settings.resolved_model_dir,
            settings.policy_dir,
            self._rt.provenance,
        )

        def progress(step: int, total: int, loss: float) -> None:
            job["progress"] = {"step": step, "total_steps": total, "loss": round(loss, 6)}
            self._save(job)

        def stage(name: str) -> None:
            job["status"] = "queued" if name == "validating" else "running"
            self._save(job)

        try:
            if job["id"] in self._cancel:
                raise TrainingCancelled("cancelled before it started")
            outcome = run_finetune(
                spec,
                deps,
                progress=progress,
                stage=stage,
                should_stop=lambda: job["id"] in self._cancel,
            )
        except TrainingCancelled:
            self._finish(job, "cancelled")
        except FinetuneRefused as exc:
            self._finish(
                job,
                "failed",
                error={
                    "code": "licence_policy_violation",
                    "message": str(exc),
                    "param": "model",
                    "reasons": [r.to_json() for r in exc.reasons],
                },
            )
        except FinetuneError as exc:
            self._finish(
                job,
                "failed",
                error={"code": "invalid_request", "message": str(exc), "param": exc.param},
            )
        except Exception as exc:  # a failed job is reported on the job, never lost
            self._finish(
                job,
                "failed",
                error={
                    "code": "training_failed",
                    "param": None,
                    "message": f"{type(exc).__name__}: {exc}",
                },
            )
        else:
            t = outcome.train
            job["governance"].update(
                draft_id=outcome.draft_id,
                adapter_sha256=outcome.adapter_sha256,
                manifest_sha256=outcome.manifest["manifest_sha256"],
                licence=outcome.licence,
                images=outcome.manifest["count"],
            )
            job["metrics"] = {
                "seconds_per_step": round(t.seconds_per_step, 4),
                "peak_memory_bytes": t.peak_memory_bytes,
                "memory_kind": t.memory_kind,
                "device": t.device,
                "resumed_from": t.resumed_from,
            }
            self._finish(job, "succeeded", fine_tuned_model=outcome.name)
        finally:
            self._cancel.discard(job["id"])

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
