"""The training set as the adapter's lineage: every image's sha256, size and caption, the
declared rights, and what the images say about themselves.

Captions come from a sidecar ``<image stem>.txt`` or, failing that, the image's folder name
(``brand_mascot/01.png`` → "brand mascot"). Reported, not refused: exact duplicates (trained
once) and images carrying provenance markers that say they were made by a generator: a C2PA
manifest (its digitalSourceType ``trainedAlgorithmicMedia``), this gateway's own watermark,
PNG text written by generators (our ``gateway:*`` keys, A1111 ``parameters``, ComfyUI
``prompt``) or XMP naming ``trainedAlgorithmicMedia``.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from gateway.provenance import DIGITAL_SOURCE_TYPE
from gateway.provenance.stamp import ProvenanceService

IMAGE_SUFFIXES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}
GENERATOR_PNG_KEYS = ("gateway:digital_source_type", "gateway:decision_id", "parameters", "prompt")
MAX_IMAGES = 10_000


class TrainingSetError(ValueError):
    """The images folder cannot be used; the message says why."""


@dataclass(frozen=True)
class TrainingImage:
    path: Path
    rel: str
    sha256: str
    bytes: int
    width: int
    height: int
    caption: str
    markers: tuple[str, ...]


@dataclass(frozen=True)
class TrainingSet:
    images: list[TrainingImage]  # unique by sha256, in path order
    duplicates: list[list[str]]  # groups of relative paths with the same bytes
    manifest: dict[str, Any]

    @property
    def sha256(self) -> str:
        return str(self.manifest["manifest_sha256"])


def caption_for(path: Path, root: Path) -> str:
    sidecar = path.with_suffix(".txt")
    if sidecar.is_file():
        text = " ".join(sidecar.read_text(encoding="utf-8").split())
        if text:
            return text
    folder = path.parent if path.parent != root else root
    return folder.name.replace("_", " ").replace("-", " ").strip() or "an image"


def _markers(
    raw: bytes, mime: str, image: Image.Image, service: ProvenanceService | None
) -> list[str]:
    found: list[str] = []
    info = getattr(image, "text", None) or {}
    for key in GENERATOR_PNG_KEYS:
        if key in info:
            found.append(f"png_text:{key}")
    xmp = image.info.get("XML:com.adobe.xmp") or image.info.get("xmp") or ""
    if isinstance(xmp, bytes):
        xmp = xmp.decode("utf-8", "replace")
    if "trainedAlgorithmicMedia" in str(xmp):
        found.append("xmp:trainedAlgorithmicMedia")
    if service is None:
        return found
    reading = service.read_manifest(raw, mime)
    if reading.present:
        found.append(
            "c2pa:"
            + (
                "signed_by_this_gateway"
                if reading.valid and reading.signer_serial == service.credentials.certificate_serial
                else "present"
            )
        )
        if DIGITAL_SOURCE_TYPE in json.dumps(reading.manifest or {}):
            found.append("c2pa:trainedAlgorithmicMedia")
    mark = service.watermarker.read(image.convert("RGB"))
    if mark.detected:
        found.append(f"watermark:{mark.payload}")
    return found


def scan(
    root: Path, *, rights: str, rights_note: str | None, service: ProvenanceService | None
) -> TrainingSet:
    """Read every image under ``root`` (recursively); build the manifest."""
    if not root.is_dir():
        raise TrainingSetError(f"{root} is not a folder")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise TrainingSetError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if len(paths) > MAX_IMAGES:
        raise TrainingSetError(f"{root} holds {len(paths)} images; at most {MAX_IMAGES}")
    by_hash: dict[str, list[str]] = {}
    images: list[TrainingImage] = []
    total = 0
    for path in paths:
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        rel = path.relative_to(root).as_posix()
        total += len(raw)
        seen = digest in by_hash
        by_hash.setdefault(digest, []).append(rel)
        if seen:
            continue
        try:
            with Image.open(io.BytesIO(raw)) as opened:
                opened.load()
                markers = _markers(raw, IMAGE_SUFFIXES[path.suffix.lower()], opened, service)
                width, height = opened.size
        except (OSError, ValueError) as exc:
            raise TrainingSetError(f"{rel} is not a readable image: {exc}") from None
        caption = caption_for(path, root)
        images.append(
            TrainingImage(path, rel, digest, len(raw), width, height, caption, tuple(markers))
        )
    duplicates = [group for group in by_hash.values() if len(group) > 1]
    flagged = [
        {"path": i.rel, "sha256": i.sha256, "markers": list(i.markers)} for i in images if i.markers
    ]
    body: dict[str, Any] = {
        "count": len(paths),
        "unique": len(images),
        "total_bytes": total,
        "rights": rights,
        "rights_note": rights_note,
        "images": [
            {
                "sha256": i.sha256,
                "bytes": i.bytes,
                "size": f"{i.width}x{i.height}",
                "caption": i.caption,
            }
            for i in images
        ],
        "duplicates": duplicates,
        "ai_generated_or_c2pa": flagged,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    body["manifest_sha256"] = hashlib.sha256(canonical.encode()).hexdigest()
    return TrainingSet(images, duplicates, body)
