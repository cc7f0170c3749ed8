"""Decode an image given as a ``data:image/...;base64,`` URL, within fixed limits.

One function, so it can be swapped for the shared bounded decoder: the byte limit is checked
before decoding, the pixel limit from the header before the pixels are loaded (no
decompression bombs). Errors name the request field (``param``).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from gateway.errors import GatewayError

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # as /v1/moderations
MAX_PIXELS = 4096 * 4096
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@dataclass(frozen=True)
class DecodedImage:
    raw: bytes  # the file as sent (a C2PA manifest lives in these bytes)
    mime: str  # from the decoded format, not from the URL's claim
    image: Image.Image  # RGB


def decode_data_url(url: str, param: str) -> DecodedImage:
    head, sep, data = url.partition(",")
    if not (sep and head.startswith("data:image/") and head.endswith(";base64")):
        raise GatewayError(
            422,
            "invalid_image",
            "only data:image/...;base64 URLs are accepted "
            "(the gateway fetches nothing from the network)",
            param=param,
        )
    if len(data) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise GatewayError(413, "image_too_large", "image is larger than 20 MB", param=param)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GatewayError(422, "invalid_image", f"not valid base64: {exc}", param=param) from exc
    return decode_bytes(raw, param)


def decode_bytes(raw: bytes, param: str) -> DecodedImage:
    if len(raw) > MAX_IMAGE_BYTES:
        raise GatewayError(413, "image_too_large", "image is larger than 20 MB", param=param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            if image.width * image.height > MAX_PIXELS:
                raise GatewayError(
                    413,
                    "image_too_large",
                    f"image has {image.width}x{image.height} pixels; at most {MAX_PIXELS}",
                    param=param,
                )
            image.load()
    except GatewayError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Warning) as exc:
        raise GatewayError(
            422, "invalid_image", f"not a decodable image: {exc}", param=param
        ) from exc
    mime = _MIME.get(image.format or "", f"image/{(image.format or 'unknown').lower()}")
    return DecodedImage(raw, mime, image.convert("RGB"))
