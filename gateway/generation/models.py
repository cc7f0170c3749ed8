"""The model manager: which registered models can generate right now, and their pipelines.

Each model gets a :class:`~gateway.generation.batching.Batcher` whose owner thread builds
(demo-tiny), loads, warms up and runs the pipeline: no other thread runs torch for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from gateway.generation.batching import Batcher
from gateway.generation.demo_tiny import build_demo_tiny, is_current
from gateway.generation.loader import (
    LoadedModel,
    ModelNotInstalled,
    ModelUnavailable,
    load_adapter,
    load_model,
    source_path,
)
from gateway.generation.run import run_batch
from gateway.generation.warmup import warm_up
from gateway.policy.schema import ModelEntry, ModelRegistry

DEFAULT_MAX_BATCH = 8  # measured: bench/throughput.py, docs/operators.md

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingConfig:
    max_wait_s: float = 0.01
    max_waiting_images: int = 16
    torch_threads: int | None = None
    cpu_batch_invariant: bool = True  # oneDNN off on CPU: batched pixels == alone pixels


@dataclass(frozen=True)
class ModelStatus:
    model_id: str
    entry: ModelEntry
    available: bool
    reason: str | None
    weights_sha256: str | None


class ModelManager:
    """Loads every registered model whose weights are present; remembers why others are not."""

    def __init__(
        self, registry: ModelRegistry, model_dir: Path, batching: BatchingConfig | None = None
    ) -> None:
        self._registry = registry
        self._model_dir = model_dir
        self._batching = batching or BatchingConfig()
        self._loaded: dict[str, LoadedModel] = {}
        self._unavailable: dict[str, str] = {}
        self._owners: dict[str, Batcher] = {}  # base model id -> its pipeline's owner

    @property
    def entries(self) -> Mapping[str, ModelEntry]:
        return self._registry.models

    def prepare(self) -> None:
        """Build and load every model on its own owner thread, then its LoRA adapters over it
        (on the same thread, never reloading the base); warm-up goes on in the background."""
        adapters: list[tuple[str, ModelEntry]] = []
        for model_id, entry in self._registry.models.items():
            if entry.source.kind == "lora":
                adapters.append((model_id, entry))
                continue
            batcher = Batcher(
                model_id,
                max_batch=entry.options.max_batch or DEFAULT_MAX_BATCH,
                max_wait_s=self._batching.max_wait_s,
                max_waiting_images=self._batching.max_waiting_images,
                torch_threads=self._batching.torch_threads,
            )
            try:
                loaded = batcher.call(partial(self._load, model_id, entry)).result()
            except BaseException as exc:
                batcher.stop()
                if not isinstance(exc, ModelUnavailable):
                    raise  # (the caller closes the models already loaded)
                self._unavailable[model_id] = str(exc)
                # not installed is the normal state of most registered models: `gateway models
                # list` says why; a pin mismatch or a failed load is worth a warning
                level = logging.DEBUG if isinstance(exc, ModelNotInstalled) else logging.WARNING
                log.log(level, "model %s unavailable: %s", model_id, exc)
                continue
            self._loaded[model_id] = loaded
            self._owners[model_id] = batcher
            log.info("model %s loaded; warming up", model_id)
        for model_id, entry in adapters:
            self._prepare_adapter(model_id, entry)
        for model_id, batcher in self._owners.items():
            loaded = self._loaded[model_id]
            # the batch key carries the adapter: one call runs one adapter (or the base alone)
            batcher.set_runner(partial(run_batch, loaded))
            batcher.call(partial(self._warm, loaded, batcher))

    def _prepare_adapter(self, model_id: str, entry: ModelEntry) -> None:
        base = self._loaded.get(entry.base or "")
        owner = self._owners.get(entry.base or "")
        if base is None or owner is None:
            self._unavailable[model_id] = (
                f"{model_id} is a LoRA adapter and its base {entry.base} is not loaded"
            )
            return
        try:  # on the base's owner thread: loading an adapter runs torch on its pipeline
            loaded = owner.call(
                partial(load_adapter, model_id, entry, self._model_dir, base)
            ).result()
        except ModelUnavailable as exc:
            self._unavailable[model_id] = str(exc)
            level = logging.DEBUG if isinstance(exc, ModelNotInstalled) else logging.WARNING
            log.log(level, "adapter %s unavailable: %s", model_id, exc)
            return
        self._loaded[model_id] = loaded
        log.info("adapter %s ready over %s", model_id, entry.base)

    def _load(self, model_id: str, entry: ModelEntry) -> LoadedModel:
        """On the owner thread: build demo-tiny if needed, then load and check the pins."""
        if self._batching.cpu_batch_invariant:
            _batch_invariant_cpu()
        if entry.source.kind == "demo_tiny":
            path = source_path(entry, self._model_dir)
            if not path.exists() or not is_current(path):
                log.info("building %s into %s", model_id, path)
                try:
                    build_demo_tiny(path)
                except OSError as exc:
                    if not path.exists():
                        raise ModelUnavailable(
                            f"could not build {model_id} at {path}: {exc}"
                        ) from exc
                    # an older build stays usable (only slow at 512x512)
                    log.warning("could not rebuild %s at %s: %s", model_id, path, exc)
        return load_model(model_id, entry, self._model_dir)

    @staticmethod
    def _warm(loaded: LoadedModel, batcher: Batcher) -> None:
        try:
            warm_up(loaded, batcher.max_batch)
        except Exception:  # requests still run (and fail closed if the pipeline is broken)
            log.exception("warm-up of %s failed", loaded.model_id)
        finally:
            batcher.ready.set()

    def batcher(self, model_id: str) -> Batcher:
        """The owner of ``model_id``'s pipeline: its own, or its base's for an adapter."""
        loaded = self._loaded.get(model_id)
        owner = self._owners.get(loaded.base.model_id if loaded and loaded.base else model_id)
        if loaded is None or owner is None:
            raise ModelUnavailable(self.status(model_id).reason or model_id)
        return owner

    def warming(self) -> list[str]:
        """Loaded models whose warm-up has not finished (``/readyz`` is not ready meanwhile)."""
        return [m for m, b in self._owners.items() if not b.ready.is_set()]

    def wait_warm(self, timeout_s: float) -> bool:
        """Block until every loaded model has warmed up (or ``timeout_s`` passed)."""
        deadline = time.monotonic() + timeout_s
        return all(
            b.ready.wait(max(0.0, deadline - time.monotonic())) for b in self._owners.values()
        )

    def waiting_images(self) -> dict[str, int]:
        """Images queued and not yet started, per base model (the queue-depth gauge; an
        adapter's requests wait in its base's queue)."""
        return {model: b.waiting_images() for model, b in self._owners.items()}

    def close(self) -> None:
        for batcher in self._owners.values():
            batcher.stop()

    def status(self, model_id: str) -> ModelStatus:
        entry = self._registry.models[model_id]
        loaded = self._loaded.get(model_id)
        if loaded is not None:
            return ModelStatus(model_id, entry, True, None, loaded.weights_sha256)
        reason = self._unavailable.get(model_id, f"{model_id} has not been loaded")
        return ModelStatus(model_id, entry, False, reason, None)

    def lineage(self, model_id: str) -> list[dict[str, str | None]]:
        """The model, then its base, ...: each with its kind, licence and weights sha256."""
        out: list[dict[str, str | None]] = []
        for mid in self._registry.chain(model_id):
            entry = self._registry.models[mid]
            loaded = self._loaded.get(mid)
            out.append(
                {
                    "id": mid,
                    "kind": entry.source.kind,
                    "licence": entry.licence,
                    "weights_sha256": loaded.weights_sha256 if loaded else None,
                }
            )
        return out

    def unavailable(self) -> list[str]:
        return [m for m in self._registry.models if m not in self._loaded]

    def get(self, model_id: str) -> LoadedModel:
        loaded = self._loaded.get(model_id)
        if loaded is None:
            raise ModelUnavailable(self.status(model_id).reason or model_id)
        return loaded


def _batch_invariant_cpu() -> None:
    """oneDNN (mkldnn) picks convolution algorithms by batch size, so on a CPU an image's
    last bits depend on its batch; torch's own convolutions do not (measured: docs/operators.md).
    The flag is process-wide; it is only turned off when no GPU is used."""
    import torch

    if not torch.cuda.is_available():
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
