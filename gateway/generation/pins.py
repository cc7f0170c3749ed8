"""sha256 pins of weight files: computing them and checking them before any load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST_NAME = "gateway-manifest.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pth", ".pt", ".onnx", ".gguf")


class PinMismatch(Exception):
    """A weight file is missing, unpinned or does not match its pin."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weight_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def hash_weight_files(root: Path) -> dict[str, str]:
    """{relative path: sha256} for every weight file under ``root`` (or the file itself)."""
    if root.is_file():
        return {root.name: sha256_file(root)}
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in weight_files(root)}


def manifest_pins(root: Path) -> dict[str, str]:
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise PinMismatch(f"{path} is missing; rebuild the model")
    files = json.loads(path.read_text(encoding="utf-8")).get("files")
    if not isinstance(files, dict) or not files:
        raise PinMismatch(f"{path} lists no weight files")
    return {str(k): str(v) for k, v in files.items()}


def verify_pins(root: Path, pins: dict[str, str]) -> str:
    """Check every weight file against ``pins``; return the combined weights sha256.

    Every pinned file must exist and match, and every weight file present must be pinned
    (an unpinned file could be swapped in unnoticed).
    """
    if not pins:
        raise PinMismatch(
            f"no sha256 pins are registered for {root}; run `gateway models hash` and add them"
        )
    actual = hash_weight_files(root)
    for rel, expected in sorted(pins.items()):
        got = actual.get(rel)
        if got is None:
            raise PinMismatch(f"pinned weight file {rel} is missing under {root}")
        if got != expected:
            raise PinMismatch(
                f"weight file {rel} has sha256 {got}, but the registry pins {expected}"
            )
    unpinned = sorted(set(actual) - set(pins))
    if unpinned:
        raise PinMismatch(f"weight file {unpinned[0]} under {root} has no sha256 pin")
    return combined_digest(pins)


def combined_digest(pins: dict[str, str]) -> str:
    if len(pins) == 1:
        return next(iter(pins.values()))
    lines = "".join(f"{rel}:{digest}\n" for rel, digest in sorted(pins.items()))
    return hashlib.sha256(lines.encode()).hexdigest()
