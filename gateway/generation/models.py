"""The model manager: which registered models can generate right now, and their pipelines."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.generation.demo_tiny import build_demo_tiny, is_current
from gateway.generation.loader import (
    LoadedModel,
    ModelNotInstalled,
    ModelUnavailable,
    load_adapter,
    load_model,
    source_path,
)
from gateway.policy.schema import ModelEntry, ModelRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelStatus:
    model_id: str
    entry: ModelEntry
    available: bool
    reason: str | None
    weights_sha256: str | None


class ModelManager:
    """Loads every registered model whose weights are present; remembers why others are not."""

    def __init__(self, registry: ModelRegistry, model_dir: Path) -> None:
        self._registry = registry
        self._model_dir = model_dir
        self._loaded: dict[str, LoadedModel] = {}
        self._unavailable: dict[str, str] = {}

    @property
    def entries(self) -> Mapping[str, ModelEntry]:
        return self._registry.models

    def prepare(self) -> None:
        adapters = []
        for model_id, entry in self._registry.models.items():
            if entry.source.kind == "lora":
                adapters.append((model_id, entry))
                continue
            if entry.source.kind == "demo_tiny":
                path = source_path(entry, self._model_dir)
                if not path.exists() or not is_current(path):
                    log.info("building %s into %s", model_id, path)
                    try:
                        build_demo_tiny(path)
                    except OSError as exc:
                        if not path.exists():
                            reason = f"could not build {model_id} at {path}: {exc}"
                            self._unavailable[model_id] = reason
                            log.warning("%s", reason)
                            continue
                        # an older build stays usable (only slow at 512x512)
                        log.warning("could not rebuild %s at %s: %s", model_id, path, exc)
            try:
                self._loaded[model_id] = load_model(model_id, entry, self._model_dir)
                log.info("model %s ready", model_id)
            except ModelUnavailable as exc:
                self._unavailable[model_id] = str(exc)
                # not installed is the normal state of most registered models: `gateway models
                # list` says why; a pin mismatch or a failed load is worth a warning
                level = logging.DEBUG if isinstance(exc, ModelNotInstalled) else logging.WARNING
                log.log(level, "model %s unavailable: %s", model_id, exc)
        for model_id, entry in adapters:  # over their loaded bases, never reloading them
            self._prepare_adapter(model_id, entry)

    def _prepare_adapter(self, model_id: str, entry: ModelEntry) -> None:
        base = self._loaded.get(entry.base or "")
        if base is None:
            self._unavailable[model_id] = (
                f"{model_id} is a LoRA adapter and its base {entry.base} is not loaded"
            )
            return
        try:
            self._loaded[model_id] = load_adapter(model_id, entry, self._model_dir, base)
            log.info("adapter %s ready over %s", model_id, entry.base)
        except ModelUnavailable as exc:
            self._unavailable[model_id] = str(exc)
            level = logging.DEBUG if isinstance(exc, ModelNotInstalled) else logging.WARNING
            log.log(level, "adapter %s unavailable: %s", model_id, exc)

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
