"""LoRA adapters served over an already loaded base pipeline.

:func:`activate_adapter` is the one call the generation path makes before running the base
pipeline: with an :class:`AdapterRef` it makes that adapter the only active one (loaded with
diffusers' ``load_lora_weights`` the first time, then kept in the pipeline under a name
derived from its sha256), with ``None`` it disables every adapter. The base is never
reloaded. Calls must not interleave on one pipeline: the base's owner thread (its batcher) runs
them one at a time, and a batch holds the requests of one adapter only (the batch key).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.generation.pins import sha256_file


class AdapterUnavailable(Exception):
    """The adapter file does not match its pin or does not load into the base."""


@dataclass(frozen=True)
class AdapterRef:
    model_id: str  # the adapter's registry id
    path: Path  # the .safetensors file
    sha256: str  # pinned; checked again before the file is first loaded

    @property
    def name(self) -> str:
        """The adapter's name inside the pipeline: a changed file gets a new name."""
        return f"lora_{self.sha256[:16]}"


def loaded_adapters(pipeline: Any) -> set[str]:
    listed = pipeline.get_list_adapters() if hasattr(pipeline, "get_list_adapters") else {}
    return {name for names in listed.values() for name in names}


def activate_adapter(pipeline: Any, adapter: AdapterRef | None) -> None:
    """Make ``adapter`` the pipeline's only active adapter, or disable adapters for None."""
    loaded = loaded_adapters(pipeline)
    if adapter is None:
        if loaded:
            pipeline.disable_lora()
        return
    if adapter.name not in loaded:
        got = sha256_file(adapter.path) if adapter.path.is_file() else None
        if got != adapter.sha256:
            raise AdapterUnavailable(
                f"{adapter.model_id}: adapter file {adapter.path} has sha256 {got}, but the "
                f"registry pins {adapter.sha256}"
            )
        try:
            pipeline.load_lora_weights(
                str(adapter.path.parent),
                weight_name=adapter.path.name,
                adapter_name=adapter.name,
                local_files_only=True,
            )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise AdapterUnavailable(
                f"{adapter.model_id}: loading {adapter.path} failed: {exc}"
            ) from exc
    pipeline.enable_lora()
    pipeline.set_adapters([adapter.name], adapter_weights=[1.0])
