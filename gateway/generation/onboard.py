"""Onboarding a model folder: check it loads, pin its weights, write its models.yaml entry.

``gateway models add`` calls ``prepare_entry`` (which loads the folder through the same
loader ``gateway serve`` uses, local files only) and ``with_model`` (which edits the
models.yaml text of the version in force, keeping every comment and every other entry
byte for byte). The result becomes a policy draft; nothing here publishes anything.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.generation.loader import ModelUnavailable, load_model
from gateway.generation.pins import hash_weight_files
from gateway.policy.schema import ModelEntry

DEFAULT_STEPS = {"min": 1, "max": 100, "default": 30}
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+\-]*")


class OnboardError(ValueError):
    """The folder or the options cannot make a registry entry; the message says why."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class PreparedModel:
    model_id: str
    entry: dict[str, Any]  # the models.yaml entry, as plain data
    pipeline_class: str
    weights_sha256: str


def parse_sizes(text: str) -> list[str]:
    """``"512x512,768x512"`` -> ``["512x512", "768x512"]`` (multiples of 8)."""
    sizes = [s.strip() for s in text.split(",") if s.strip()]
    for s in sizes:
        w, _, h = s.partition("x")
        if not (w.isdigit() and h.isdigit() and int(w) % 8 == 0 and int(h) % 8 == 0):
            raise OnboardError(f"size {s!r} must be WxH with multiples of 8", "--sizes")
    if not sizes:
        raise OnboardError("give at least one size, e.g. 512x512", "--sizes")
    return sizes


def parse_steps(text: str) -> dict[str, int]:
    """``"MIN:MAX:DEFAULT"`` (e.g. ``1:50:30``) -> the registry's ``steps`` mapping."""
    parts = text.split(":")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise OnboardError("steps must be MIN:MAX:DEFAULT, e.g. 1:50:30", "--steps")
    low, high, default = (int(p) for p in parts)
    if not 1 <= low <= default <= high <= 500:
        raise OnboardError("steps must satisfy 1 <= MIN <= DEFAULT <= MAX <= 500", "--steps")
    return {"min": low, "max": high, "default": default}


def registry_path(path: Path, model_dir: Path) -> str:
    """How models.yaml names ``path``: relative to the model folder when it is inside it."""
    resolved, root = path.resolve(), model_dir.resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(resolved)


def prepare_entry(
    model_id: str,
    path: Path,
    model_dir: Path,
    *,
    licence: str,
    pipeline_class: str | None = None,
    sizes: list[str] | None = None,
    steps: dict[str, int] | None = None,
    existing: dict[str, Any] | None = None,
) -> PreparedModel:
    """Hash every weight file under ``path``, load it with those pins, return its entry.

    Fields the operator does not give are kept from an ``existing`` entry of the same id
    (description, options, base, use restrictions), else defaulted.
    """
    if not path.exists():
        raise OnboardError(f"{path} does not exist", "--path")
    pins = hash_weight_files(path)
    if not pins:
        raise OnboardError(f"{path} holds no weight files (.safetensors, .bin, ...)", "--path")
    entry: dict[str, Any] = dict(existing or {})
    entry.pop("pins", None)
    source: dict[str, Any] = {
        "kind": "single_file" if path.is_file() else "pipeline_dir",
        "path": registry_path(path, model_dir),
    }
    if path.is_file():
        source["pipeline_class"] = pipeline_class or "StableDiffusionPipeline"
    elif pipeline_class:
        source["pipeline_class"] = pipeline_class
    entry.update(licence=licence, source=source, pins=pins)
    if sizes is not None or "sizes" not in entry:
        entry["sizes"] = sizes or []
    if steps is not None or "steps" not in entry:
        entry["steps"] = steps or dict(DEFAULT_STEPS)
    try:
        model = ModelEntry.model_validate({**entry, "sizes": entry["sizes"] or ["8x8"]})
    except ValueError as exc:
        raise OnboardError(f"the entry is not valid: {exc}", "ID") from None
    try:
        loaded = load_model(model_id, model, model_dir)
    except ModelUnavailable as exc:
        raise OnboardError(f"{path} does not load: {exc}", "--path") from None
    found = type(loaded.pipeline).__name__
    if pipeline_class and found != pipeline_class:
        raise OnboardError(f"{path} loads as {found}, not {pipeline_class}", "--pipeline-class")
    if not entry["sizes"]:
        entry["sizes"] = [_native_size(loaded.pipeline)]
    entry = _ordered(entry)
    return PreparedModel(model_id, entry, found, loaded.weights_sha256)


def _native_size(pipeline: Any) -> str:
    """The pipeline's native resolution: its UNet/transformer sample size x the VAE factor."""
    denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
    sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
    factor = int(getattr(pipeline, "vae_scale_factor", 8) or 8)
    if isinstance(sample, int) and sample * factor % 8 == 0:
        side = sample * factor
        return f"{side}x{side}"
    return "512x512"


_ORDER = ("licence", "base", "use_restrictions", "description", "source", "pins", "sizes")


def _ordered(entry: dict[str, Any]) -> dict[str, Any]:
    keys = [k for k in _ORDER if k in entry] + [k for k in entry if k not in _ORDER]
    return {k: entry[k] for k in keys}


# -- models.yaml text --------------------------------------------------------------------


def _scalar(value: Any) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and yaml.safe_load(text) == text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _flat(value: Any) -> bool:
    items = value.values() if isinstance(value, dict) else value
    return not any(isinstance(v, dict | list) for v in items)


def render_entry(model_id: str, entry: dict[str, Any]) -> str:
    """The entry as models.yaml lines (indented under ``models:``), pins one per line."""
    lines = [f"  {_scalar(model_id)}:"]
    for key, value in entry.items():
        if key == "pins" and isinstance(value, dict):
            lines.append("    pins:")
            lines += [f"      {_scalar(rel)}: {digest}" for rel, digest in value.items()]
        elif isinstance(value, dict) and _flat(value):
            inner = ", ".join(f"{_scalar(k)}: {_scalar(v)}" for k, v in value.items())
            lines.append(f"    {key}: {{{inner}}}")
        elif isinstance(value, list) and _flat(value):
            lines.append(f"    {key}: [{', '.join(json.dumps(v) for v in value)}]")
        elif isinstance(value, dict | list):
            block = yaml.safe_dump({key: value}, sort_keys=False, allow_unicode=True, width=96)
            lines += ["    " + line for line in block.rstrip("\n").splitlines()]
        else:
            lines.append(f"    {key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"


def _models_block(lines: list[str]) -> tuple[int, int]:
    """Line range [start, end) of the ``models:`` mapping's entries."""
    start = next((i for i, line in enumerate(lines) if re.match(r"models:\s*(#.*)?$", line)), None)
    if start is None:
        raise OnboardError("models.yaml has no top-level `models:` mapping", "models.yaml")
    end = len(lines)
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if line.strip() and not line.startswith((" ", "#")):
            end = i
            break
    return start + 1, end


def _entry_key(line: str) -> str | None:
    if not line.startswith("  ") or line.startswith("   ") or line.lstrip().startswith("#"):
        return None
    try:
        parsed = yaml.safe_load(line.strip())
    except yaml.YAMLError:
        return None
    if isinstance(parsed, dict) and len(parsed) == 1:
        key, value = next(iter(parsed.items()))
        return str(key) if value is None else None
    return None


def _comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def with_model(text: str, model_id: str, entry: dict[str, Any]) -> str:
    """models.yaml ``text`` with ``model_id`` added (or its entry replaced) and nothing else.

    Checked by parsing both: the result differs from the input in that one entry only.
    """
    before = yaml.safe_load(text) or {}
    lines = text.splitlines(keepends=True)
    first, end = _models_block(lines)
    keys = [(i, _entry_key(lines[i])) for i in range(first, end)]
    starts = [i for i, key in keys if key is not None]
    rendered = render_entry(model_id, entry)
    at = next((i for i, key in keys if key == model_id), None)
    if at is None:  # append after the last entry's last non-blank, non-comment line
        last = end
        while last > first and (not lines[last - 1].strip() or lines[last - 1].startswith("#")):
            last -= 1
        if last > 0 and not lines[last - 1].endswith("\n"):
            lines[last - 1] += "\n"
        new_lines = [*lines[:last], "\n", rendered, *lines[last:]]
    else:
        nxt = next((i for i in starts if i > at), end)
        stop = nxt
        while stop > at + 1 and (
            not lines[stop - 1].strip() or lines[stop - 1].lstrip().startswith("#")
        ):
            stop -= 1
        new_lines = [*lines[:at], rendered, *lines[stop:]]
    out = "".join(new_lines)
    after = yaml.safe_load(out)
    expected = dict(before)
    expected["models"] = {**before.get("models", {}), model_id: entry}
    if after != expected:
        raise OnboardError(
            "could not add the entry to models.yaml without changing other entries; "
            "edit the draft by hand",
            "models.yaml",
        )
    return out
