"""Sign a manifest into image bytes and read one back, offline, with c2pa-python.

No network: no timestamp authority (``ta_url=None``), no remote manifest or OCSP fetches.
Validation states, weakest first: ``Invalid`` < ``Valid`` < ``Trusted`` (``Trusted``: the
signing certificate chains to one of the configured trust anchors).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

from gateway.provenance.credentials import SigningCredentials
from gateway.provenance.manifest import CREATED_LABELS

MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_OFFLINE = {"remote_manifest_fetch": False, "ocsp_fetch": False}


class SigningError(Exception):
    """The manifest could not be signed into the image (fail closed)."""


@dataclass(frozen=True)
class C2paReading:
    present: bool
    valid: bool  # Valid or Trusted: the signature, the assertions and the pixels' hash match
    validation_state: str | None  # Invalid | Valid | Trusted; None when no manifest
    errors: list[str] = field(default_factory=list)  # failure codes (and explanations)
    manifest: dict[str, Any] | None = None  # the active manifest
    signer_serial: str | None = None

    def assertion(self, label: str) -> dict[str, Any] | None:
        """The data of the first assertion whose label is ``label`` or starts ``label.``."""
        for item in (self.manifest or {}).get("assertions", []):
            name = str(item.get("label", ""))
            if name == label or name.startswith(label + "."):
                data: dict[str, Any] = item.get("data") or {}
                return data
        return None


def sign(
    image: bytes, fmt: str, manifest: dict[str, Any], creds: SigningCredentials
) -> tuple[bytes, bytes]:
    """(the image with the manifest embedded, the manifest store's bytes).

    Raises :class:`SigningError`; the SDK's verify-after-sign rejects a malformed manifest.
    """
    import c2pa

    settings = {
        "verify": _OFFLINE,
        "builder": {"thumbnail": {"enabled": False}, "created_assertion_labels": CREATED_LABELS},
    }
    alg = getattr(c2pa.C2paSigningAlg, creds.alg.upper())
    info = c2pa.C2paSignerInfo(alg, creds.chain_pem, creds.key_pem, None)
    source, dest = io.BytesIO(image), io.BytesIO()
    try:
        with (
            c2pa.Signer.from_info(info) as signer,
            c2pa.Builder(manifest, c2pa.Context.from_dict(settings)) as builder,
        ):
            store = builder.sign(signer, MIME[fmt], source, dest)
    except c2pa.C2paError as exc:
        raise SigningError(f"C2PA signing failed: {exc}") from exc
    return dest.getvalue(), bytes(store)


def read(data: bytes, mime: str, anchors_pem: str) -> C2paReading:
    """The manifest store's active manifest and its validation against ``anchors_pem``."""
    import c2pa

    settings: dict[str, Any] = {"verify": _OFFLINE}
    if anchors_pem:
        settings["trust"] = {"user_anchors": anchors_pem}
    try:
        reader = c2pa.Reader.try_create(
            mime, io.BytesIO(data), context=c2pa.Context.from_dict(settings)
        )
    except c2pa.C2paError as exc:  # a manifest is there but cannot be parsed
        return C2paReading(True, False, "Invalid", [f"manifest.unreadable: {exc}"])
    if reader is None:
        return C2paReading(False, False, None)
    with reader:
        store = json.loads(reader.json())
    state = store.get("validation_state")
    active = (store.get("manifests") or {}).get(store.get("active_manifest") or "")
    failures = (store.get("validation_results") or {}).get("activeManifest", {}).get("failure")
    errors = [f"{f.get('code')}: {f.get('explanation', '')}".strip() for f in failures or []] or [
        f"{s.get('code')}" for s in store.get("validation_status") or []
    ]
    serial = ((active or {}).get("signature_info") or {}).get("cert_serial_number")
    return C2paReading(
        present=True,
        valid=state in ("Valid", "Trusted"),
        validation_state=state,
        errors=errors,
        manifest=active,
        signer_serial=str(serial) if serial is not None else None,
    )
