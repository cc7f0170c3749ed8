"""Untrusted image input (data URLs, uploads), bounded before anything is decoded.

Invariants:
- Only ``data:image/...;base64,`` URLs are accepted: the gateway fetches nothing.
- The encoded size is checked before base64 decoding, the pixel count (read from the file's
  header by PIL's lazy ``open``) before a single pixel is decoded: one image holds at most
  ``max_pixels`` and all images of one request at most ``max_request_pixels``. PIL's global
  ``Image.MAX_IMAGE_PIXELS`` is neither relied on nor changed; its DecompressionBombError and
  DecompressionBombWarning are answered like our own limit.
- Only PNG, JPEG, WebP and GIF are opened (OpenAI's set; no EPS or other decoders that shell
  out or carry a large attack surface). Only the first frame of an animation is decoded.
- Every failure is a ``GatewayError`` naming ``param``: 413 ``image_too_large`` for a limit,
  422 ``invalid_image`` for anything undecodable. Nothing here raises anything else.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass

from PIL import Image

from gateway.errors import GatewayError
from gateway.settings import Settings

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass(frozen=True)
class ImageLimits:
    """Per-image and per-request bounds (from Settings: GATEWAY_MAX_IMAGE_*)."""

    max_bytes: int
    max_pixels: int
    max_request_pixels: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            max_request_pixels=settings.max_request_image_pixels,
        )


class PixelBudget:
    """The pixels one request may still decode; create one per request."""

    def __init__(self, limits: ImageLimits) -> None:
        self.limits = limits
        self.left = limits.max_request_pixels

    def take(self, pixels: int, param: str) -> None:
        if pixels > self.left:
            raise GatewayError(
                413,
                "image_too_large",
                f"the request's images hold more than {self.limits.max_request_pixels} pixels "
                "in all",
                param=param,
            )
        self.left -= pixels


def data_url_bytes(url: str, param: str, limits: ImageLimits) -> bytes:
    """The encoded image in a ``data:image/...;base64,`` URL, size-checked before decoding."""
    head, sep, data = url.partition(",")
    if not (sep and head.startswith("data:image/") and head.endswith(";base64")):
        raise GatewayError(
            422,
            "invalid_image",
            "only data:image/...;base64 URLs are accepted "
            "(the gateway fetches nothing from the network)",
            param=param,
        )
    if len(data) // 4 * 3 > limits.max_bytes + 2:
        raise _too_many_bytes(limits, param)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GatewayError(422, "invalid_image", f"not valid base64: {exc}", param=param) from None
    if len(raw) > limits.max_bytes:
        raise _too_many_bytes(limits, param)
    return raw


def open_image(raw: bytes, param: str, budget: PixelBudget) -> Image.Image:
    """Read the header only, check the pixel count against both limits; nothing decoded yet."""
    limits = budget.limits
    try:
        image = Image.open(io.BytesIO(raw), formats=FORMATS)
        width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(limits, param, None) from None
    except Exception as exc:  # any decoder failure on untrusted bytes is the client's
        raise _invalid(exc, param) from None
    pixels = width * height
    if pixels <= 0:
        raise GatewayError(422, "invalid_image", "the image has no pixels", param=param)
    if pixels > limits.max_pixels:
        raise _too_many_pixels(limits, param, (width, height))
    budget.take(pixels, param)
    return image


def decode_image(image: Image.Image, param: str) -> Image.Image:
    """Decode an image ``open_image`` admitted, as RGB."""
    try:
        image.load()
        return image.convert("RGB")
    except Exception as exc:  # truncated or corrupt data
        raise _invalid(exc, param) from None


def decode_data_urls(urls: list[tuple[str, str]], limits: ImageLimits) -> list[Image.Image]:
    """Decode ``(param, url)`` pairs under one request budget; all headers are checked first."""
    budget = PixelBudget(limits)
    opened = [
        (param, open_image(data_url_bytes(url, param, limits), param, budget))
        for param, url in urls
    ]
    return [decode_image(image, param) for param, image in opened]


@dataclass(frozen=True)
class UploadedImage:
    """One image given whole (provenance verify): its bytes as sent and its pixels."""

    raw: bytes  # the file as sent (a C2PA manifest lives in these bytes)
    mime: str  # from the decoded format, not from the URL's claim
    image: Image.Image  # RGB


def read_image(raw: bytes, param: str, limits: ImageLimits) -> UploadedImage:
    """Check and decode one image file under the same limits as a data URL."""
    if len(raw) > limits.max_bytes:
        raise _too_many_bytes(limits, param)
    opened = open_image(raw, param, PixelBudget(limits))
    mime = _MIME.get(opened.format or "", "application/octet-stream")
    return UploadedImage(raw, mime, decode_image(opened, param))


def read_data_url(url: str, param: str, limits: ImageLimits) -> UploadedImage:
    return read_image(data_url_bytes(url, param, limits), param, limits)


def _too_many_bytes(limits: ImageLimits, param: str) -> GatewayError:
    return GatewayError(
        413, "image_too_large", f"the image is larger than {limits.max_bytes} bytes", param=param
    )


def _too_many_pixels(limits: ImageLimits, param: str, size: tuple[int, int] | None) -> GatewayError:
    shown = f" ({size[0]}x{size[1]})" if size else ""
    return GatewayError(
        413,
        "image_too_large",
        f"the image has more than {limits.max_pixels} pixels{shown}",
        param=param,
    )


def _invalid(exc: Exception, param: str) -> GatewayError:
    detail = str(exc) or type(exc).__name__
    return GatewayError(422, "invalid_image", f"not a decodable image: {detail}", param=param)
