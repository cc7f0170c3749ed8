"""An invisible watermark carrying a 64-bit payload, keyed per deployment (numpy only).

How it works (spread-transform dither modulation on a canonical grid):

* The image's luminance is area-resized to a fixed ``GRID`` x ``GRID`` grid, so the mark does
  not depend on the image's size: a resized copy maps onto the same grid.
* The grid's 2-D DCT gives a band of low-to-mid frequencies (they survive JPEG, WebP and
  resizing). A key-seeded permutation splits the band into 80 groups, one per embedded bit;
  each group's coefficients are projected onto a key-seeded random direction.
* Each projection is moved to the nearest point of one of two interleaved lattices (step
  ``DELTA``, with a key-seeded dither): the lattice encodes the bit. The change is brought back
  to pixel size and added equally to R, G and B (a luminance change), then embedding is
  repeated so the mark holds after rounding to 8-bit pixels.
* 80 embedded bits = the 64-bit payload + 16 check bits (HMAC-SHA256 of the payload under the
  key). Decoding reads the bits back and accepts them only when the check bits match, so an
  image that carries no mark is claimed with probability about 2**-16 per decode; a claim is
  then only believed if the payload names a decision of this gateway.

Invariants: :func:`embed` never returns an image whose mark does not decode (it raises
:class:`WatermarkError`); images narrower or lower than ``MIN_SIDE`` are refused with
:class:`TooSmall` (the caller records that and delivers them without a mark).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray
from PIL import Image

GRID = 128
MIN_SIDE = 256
PAYLOAD_BITS = 64
CHECK_BITS = 16
BITS = PAYLOAD_BITS + CHECK_BITS
DELTA = 40.0  # lattice step of a projection (grid units); larger: more robust, more visible
BAND = (3.0, 40.0)  # radii of the DCT band used (of GRID / 2 * sqrt 2)
EMBED_ROUNDS = 4
RESAMPLE = Image.Resampling.LANCZOS
_LUMA = np.array([0.299, 0.587, 0.114])

Floats = NDArray[np.float64]


class WatermarkError(Exception):
    """The mark could not be embedded so that it decodes (fail closed)."""


class TooSmall(WatermarkError):
    """The image is below ``MIN_SIDE`` on a side: the mark would not be reliable."""


@dataclass(frozen=True)
class Reading:
    detected: bool
    payload: str | None  # 16 hex digits when detected
    bit_confidence: float  # mean |soft bit|, 1.0 = every projection exactly on its lattice


def new_payload() -> str:
    """A fresh random 64-bit payload as 16 lowercase hex digits."""
    import secrets

    return secrets.token_hex(PAYLOAD_BITS // 8)


class Watermarker:
    """Embeds and reads the mark under one deployment key (32 bytes or more)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the watermark key must be at least 16 bytes")
        self._key = key

    @cached_property
    def _layout(self) -> tuple[NDArray[np.intp], NDArray[np.intp], Floats, Floats]:
        """(band indices, group of each band index, direction signs, dither), from the key."""
        u, v = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
        radius = np.hypot(u, v)
        band = np.flatnonzero((radius >= BAND[0]) & (radius <= BAND[1]))
        seed = int.from_bytes(hashlib.sha256(b"gateway-watermark-v1" + self._key).digest()[:8])
        rng = np.random.default_rng(seed)
        band = rng.permutation(band)
        groups = np.arange(band.size) % BITS
        signs = rng.choice([-1.0, 1.0], size=band.size)
        counts = np.bincount(groups, minlength=BITS).astype(np.float64)
        signs = signs / np.sqrt(counts[groups])  # each group's direction has unit length
        dither = rng.uniform(0.0, DELTA, size=BITS)
        return band, groups, signs, dither

    # -- bits -----------------------------------------------------------------------------
    def _check(self, payload: bytes) -> bytes:
        return hmac.new(self._key, b"wm-check" + payload, hashlib.sha256).digest()[:2]

    def _bits(self, payload_hex: str) -> NDArray[np.int64]:
        raw = bytes.fromhex(payload_hex)
        if len(raw) * 8 != PAYLOAD_BITS:
            raise ValueError(f"the payload must be {PAYLOAD_BITS} bits ({PAYLOAD_BITS // 4} hex)")
        data = np.frombuffer(raw + self._check(raw), dtype=np.uint8)
        return np.unpackbits(data).astype(np.int64)

    # -- grid -----------------------------------------------------------------------------
    def _projections(self, image: Image.Image) -> Floats:
        """One number per embedded bit, read from the image's canonical luminance grid.

        The image is box-resized to the grid first (8-bit RGB, then luminance): the rounding
        this adds is far below ``DELTA``. ``scipy.fft`` keeps the DCT off the BLAS threads.
        """
        from scipy.fft import dctn

        band, groups, signs, _ = self._layout
        small = image.convert("RGB").resize((GRID, GRID), RESAMPLE)
        grid = np.asarray(small, dtype=np.float64) @ _LUMA
        coeffs = np.asarray(dctn(grid, norm="ortho"), dtype=np.float64).ravel()[band]
        out = np.asarray(
            np.bincount(groups, weights=coeffs * signs, minlength=BITS), dtype=np.float64
        )
        return out

    # -- public ---------------------------------------------------------------------------
    def embed(self, image: Image.Image, payload_hex: str) -> Image.Image:
        """The image with the mark; raises :class:`TooSmall` or :class:`WatermarkError`."""
        from scipy.fft import idctn

        if min(image.size) < MIN_SIDE:
            raise TooSmall(f"{image.width}x{image.height} is below {MIN_SIDE}px on a side")
        band, groups, signs, dither = self._layout
        offset = dither + self._bits(payload_hex) * (DELTA / 2)
        rgb = image.convert("RGB")
        original = np.asarray(rgb, dtype=np.float32)
        coeffs = np.zeros(GRID * GRID)
        marked = rgb
        for _ in range(EMBED_ROUNDS):
            proj = self._projections(marked)
            target = np.round((proj - offset) / DELTA) * DELTA + offset
            if np.max(np.abs(target - proj)) < DELTA / 8:
                break  # every projection sits near its lattice point: the mark decodes
            coeffs[band] += (target - proj)[groups] * signs
            grid_change = np.asarray(idctn(coeffs.reshape(GRID, GRID), norm="ortho"))
            plane = Image.fromarray(grid_change.astype(np.float32), mode="F")
            luma = np.asarray(plane.resize(rgb.size, Image.Resampling.BICUBIC))
            pixels = np.clip(np.rint(original + luma[:, :, None]), 0, 255).astype(np.uint8)
            marked = Image.fromarray(pixels, mode="RGB")
        else:
            proj = self._projections(marked)
        if self._decode(proj).payload != payload_hex:
            raise WatermarkError("the watermark did not decode right after embedding")
        return marked

    def read(self, image: Image.Image) -> Reading:
        """Decode the mark; ``detected`` only when the 16 check bits match the payload."""
        return self._decode(self._projections(image))

    def _decode(self, proj: Floats) -> Reading:
        *_, dither = self._layout
        phase = ((proj - dither) / DELTA) % 1.0
        soft = np.cos(2 * np.pi * phase)  # +1: bit 0, -1: bit 1
        bits = (soft < 0).astype(np.uint8)
        raw = np.packbits(bits).tobytes()
        payload, check = raw[: PAYLOAD_BITS // 8], raw[PAYLOAD_BITS // 8 :]
        confidence = float(np.mean(np.abs(soft)))
        if hmac.compare_digest(check, self._check(payload)):
            return Reading(True, payload.hex(), confidence)
        return Reading(False, None, confidence)
