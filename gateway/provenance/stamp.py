"""Stamp one delivered image: watermark, encode, sign, read back; raise rather than deliver.

Order (every later step covers the earlier ones): pixels → watermark (with a decode check)
→ encode with the PNG text chunks → C2PA sign → read the manifest back and check it → decode
the watermark from the final file's pixels. :meth:`ProvenanceService.stamp` returns only an
image that passed every step; otherwise it raises :class:`ProvenanceFailure`, whose message
says which step failed (the caller records it and delivers nothing).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from gateway.provenance import PNG_COMPRESS_LEVEL, Provenance, png_info, sha256_hex
from gateway.provenance.c2pa_io import MIME, C2paReading, SigningError, read, sign
from gateway.provenance.credentials import (
    SigningCredentials,
    load_or_create_credentials,
    load_or_create_watermark_key,
)
from gateway.provenance.manifest import GATEWAY_ASSERTION, build_manifest
from gateway.provenance.watermark import TooSmall, Watermarker, WatermarkError
from gateway.settings import Settings

FORMATS = ("png", "jpeg", "webp")
JPEG_QUALITY = 95
WEBP_QUALITY = 90


class ProvenanceFailure(Exception):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.message = message


@dataclass(frozen=True)
class StampedImage:
    data: bytes
    format: str  # png | jpeg | webp
    mime: str
    sha256: str
    manifest_sha256: str  # of the signed C2PA manifest store
    validation_state: str  # as read back: Valid or Trusted
    watermark: str  # embedded | below_minimum_size
    watermark_payload: str | None  # 16 hex digits when embedded

    def to_record(self) -> dict[str, object]:
        return {
            "format": self.format,
            "manifest_sha256": self.manifest_sha256,
            "c2pa_validation_state": self.validation_state,
            "watermark": self.watermark,
            "watermark_payload": self.watermark_payload,
        }


def encode(image: Image.Image, fmt: str, provenance: Provenance | None) -> bytes:
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(
            buffer, format="PNG", pnginfo=png_info(provenance), compress_level=PNG_COMPRESS_LEVEL
        )
    elif fmt == "jpeg":
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    elif fmt == "webp":
        image.save(buffer, format="WEBP", quality=WEBP_QUALITY)
    else:
        raise ValueError(f"unknown output format {fmt!r}")
    return buffer.getvalue()


class ProvenanceService:
    """Holds the signing credentials and the watermark key; thread-safe."""

    def __init__(self, credentials: SigningCredentials, watermarker: Watermarker) -> None:
        self.credentials = credentials
        self.watermarker = watermarker

    @classmethod
    def from_settings(cls, settings: Settings) -> ProvenanceService:
        creds = load_or_create_credentials(
            settings.data_dir,
            settings.c2pa_cert_chain,
            settings.c2pa_private_key,
            settings.c2pa_signing_alg,
            settings.c2pa_trust_anchors,
            settings.instance_id,
        )
        key = load_or_create_watermark_key(
            settings.data_dir,
            settings.watermark_key.get_secret_value() if settings.watermark_key else None,
        )
        return cls(creds, Watermarker(key))

    def read_manifest(self, data: bytes, mime: str) -> C2paReading:
        return read(data, mime, self.credentials.anchors_pem)

    def stamp(
        self, image: Image.Image, provenance: Provenance, fmt: str, index: int, payload: str
    ) -> StampedImage:
        mime = MIME.get(fmt)
        if mime is None:
            raise ProvenanceFailure("encode", f"unknown output format {fmt!r}")
        try:
            marked = self.watermarker.embed(image, payload)
            mark: str | None = payload
        except TooSmall:
            marked, mark = image, None
        except WatermarkError as exc:
            raise ProvenanceFailure("watermark", str(exc)) from exc
        plain = encode(marked, fmt, provenance)
        try:
            manifest = build_manifest(provenance, index, mark)
            signed, store = sign(plain, fmt, manifest, self.credentials)
        except SigningError as exc:
            raise ProvenanceFailure("c2pa_sign", str(exc)) from exc
        reading = self.read_manifest(signed, mime)
        self._check_manifest(reading, provenance, index)
        if mark is not None and fmt != "png":  # PNG is lossless: embed() decoded these pixels
            decoded = self.watermarker.read(Image.open(io.BytesIO(signed)))
            if decoded.payload != mark:
                raise ProvenanceFailure("watermark_decode", "the final file's mark did not decode")
        return StampedImage(
            data=signed,
            format=fmt,
            mime=mime,
            sha256=sha256_hex(signed),
            manifest_sha256=sha256_hex(store),
            validation_state=str(reading.validation_state),
            watermark="embedded" if mark else "below_minimum_size",
            watermark_payload=mark,
        )

    @staticmethod
    def _check_manifest(reading: C2paReading, provenance: Provenance, index: int) -> None:
        if not reading.present:
            raise ProvenanceFailure("c2pa_read_back", "no manifest in the signed image")
        if not reading.valid:
            raise ProvenanceFailure(
                "c2pa_read_back",
                f"manifest is {reading.validation_state}: " + "; ".join(reading.errors),
            )
        ours = reading.assertion(GATEWAY_ASSERTION) or {}
        if ours.get("decision_id") != provenance.decision_id or ours.get("image_index") != index:
            raise ProvenanceFailure("c2pa_read_back", "the manifest names another decision")
