"""Helpers for the provenance tests: tampering with one pixel byte of a signed PNG."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from typing import Any

import c2pa
from PIL import Image


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def flip_last_pixel_byte(data: bytes) -> bytes:
    """The same PNG (every other chunk kept, the C2PA one included) with the last byte of
    the last scanline changed: one channel of the bottom-right pixel, nothing else."""
    chunks = png_chunks(data)
    raw = bytearray(zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT")))
    raw[-1] ^= 0x01
    out, written = bytearray(data[:8]), False
    for kind, body in chunks:
        if kind == b"IDAT":
            if not written:
                out += _chunk(b"IDAT", zlib.compress(bytes(raw)))
                written = True
            continue
        out += _chunk(kind, body)
    return bytes(out)


def strip_to_jpeg(data: bytes, quality: int = 90) -> bytes:
    """Decode and re-encode with no metadata at all (what an upload platform does)."""
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def read_manifest(data: bytes, mime: str, anchors_pem: str) -> dict[str, Any]:
    """The manifest store as a third party reads it (c2pa-python, the operator's CA)."""
    ctx = c2pa.Context.from_dict(
        {
            "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
            "trust": {"user_anchors": anchors_pem},
        }
    )
    with c2pa.Reader(mime, io.BytesIO(data), context=ctx) as reader:
        store: dict[str, Any] = json.loads(reader.json())
    return store


def assertion(store: dict[str, Any], label: str) -> dict[str, Any]:
    active = store["manifests"][store["active_manifest"]]
    for item in active["assertions"]:
        if item["label"] == label or item["label"].startswith(label + "."):
            data: dict[str, Any] = item["data"]
            return data
    raise KeyError(label)
