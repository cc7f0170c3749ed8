"""Load a registered model's diffusers pipeline from local files, after checking its pins.

Two sources: a diffusers pipeline folder (``DiffusionPipeline.from_pretrained``) and a
single ``.safetensors`` checkpoint (``<PipelineClass>.from_single_file`` with a local config
folder). Nothing is ever downloaded: ``local_files_only=True`` everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.generation.adapters import AdapterRef, AdapterUnavailable, activate_adapter
from gateway.generation.pins import PinMismatch, manifest_pins, verify_pins
from gateway.policy.schema import ModelEntry

_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


class ModelUnavailable(Exception):
    """The model is registered but cannot be used; the message says why."""


class ModelNotInstalled(ModelUnavailable):
    """Expected, not alarming: no weights are installed, or the kind is not servable yet."""


@dataclass(frozen=True)
class LoadedModel:
    model_id: str
    entry: ModelEntry
    pipeline: Any
    weights_sha256: str
    source: Path
    adapter: AdapterRef | None = None  # a LoRA adapter served over the base's pipeline
    base: LoadedModel | None = None  # the adapter's base, as loaded


def source_path(entry: ModelEntry, model_dir: Path) -> Path:
    path = Path(entry.source.path)
    return path if path.is_absolute() else model_dir / path


def check_weights(model_id: str, entry: ModelEntry, model_dir: Path) -> str:
    """Verify the weight files against the registry; return the weights sha256."""
    path = source_path(entry, model_dir)
    if not path.exists():
        raise ModelNotInstalled(f"weights for {model_id} are not installed (expected {path})")
    try:
        pins = manifest_pins(path) if entry.pins == "manifest" else dict(entry.pins)
        return verify_pins(path, pins)
    except PinMismatch as exc:
        raise ModelUnavailable(f"{model_id}: {exc}") from exc


def load_model(model_id: str, entry: ModelEntry, model_dir: Path) -> LoadedModel:
    import torch

    if entry.source.kind == "lora":
        raise ModelNotInstalled(
            f"{model_id} is a LoRA adapter: it is served over its loaded base (load_adapter)"
        )
    digest = check_weights(model_id, entry, model_dir)
    path = source_path(entry, model_dir)
    dtype = getattr(torch, _DTYPES[entry.options.dtype])
    if dtype != torch.float32 and not torch.cuda.is_available():
        dtype = torch.float32  # half precision is not usable on CPU for diffusion
    try:
        if entry.source.kind == "single_file":
            pipeline = _load_single_file(entry, path, model_dir, dtype)
        else:
            from diffusers import DiffusionPipeline

            pipeline = DiffusionPipeline.from_pretrained(
                str(path), local_files_only=True, torch_dtype=dtype
            )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelUnavailable(f"{model_id}: loading {path} failed: {exc}") from exc
    _apply_options(pipeline, entry)
    pipeline.set_progress_bar_config(disable=True)
    return LoadedModel(model_id, entry, pipeline, digest, path)


def load_adapter(
    model_id: str, entry: ModelEntry, model_dir: Path, base: LoadedModel
) -> LoadedModel:
    """A LoRA adapter over ``base``'s pipeline (not reloaded): pins checked, then a trial
    activation so that a file that does not fit the base is refused now, not mid-request."""
    digest = check_weights(model_id, entry, model_dir)
    path = source_path(entry, model_dir)
    if not path.is_file():
        raise ModelUnavailable(f"{model_id}: a LoRA adapter must be one .safetensors file")
    ref = AdapterRef(model_id, path, digest)
    try:
        activate_adapter(base.pipeline, ref)
    except AdapterUnavailable as exc:
        raise ModelUnavailable(str(exc)) from exc
    finally:
        activate_adapter(base.pipeline, None)
    return LoadedModel(model_id, entry, base.pipeline, digest, path, adapter=ref, base=base)


def _load_single_file(entry: ModelEntry, path: Path, model_dir: Path, dtype: Any) -> Any:
    import diffusers

    class_name = entry.source.pipeline_class or "StableDiffusionPipeline"
    pipeline_class = getattr(diffusers, class_name, None)
    if pipeline_class is None or not hasattr(pipeline_class, "from_single_file"):
        raise ValueError(f"{class_name} cannot load single-file checkpoints")
    kwargs: dict[str, Any] = {"local_files_only": True, "torch_dtype": dtype}
    if entry.source.config:
        config = Path(entry.source.config)
        kwargs["config"] = str(config if config.is_absolute() else model_dir / config)
    return pipeline_class.from_single_file(str(path), **kwargs)


def _apply_options(pipeline: Any, entry: ModelEntry) -> None:
    import torch

    opts = entry.options
    if opts.attention_slicing and hasattr(pipeline, "enable_attention_slicing"):
        pipeline.enable_attention_slicing()
    if opts.vae_tiling and hasattr(pipeline, "enable_vae_tiling"):
        pipeline.enable_vae_tiling()
    if torch.cuda.is_available():
        if opts.cpu_offload and hasattr(pipeline, "enable_model_cpu_offload"):
            pipeline.enable_model_cpu_offload()
        else:
            pipeline.to("cuda")
