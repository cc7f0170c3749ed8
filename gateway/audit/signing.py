"""Ed25519 signing of audit checkpoints.

The key comes from ``GATEWAY_AUDIT_SIGNING_KEY`` (base64 of a 32-byte seed) or, when that is
unset, from ``<data dir>/audit-signing-key`` (created 0600 on first start). The public key is
written beside it (``audit-signing-key.pub``) for anyone who verifies offline. A replica
starts only when its public key is registered in the database (:mod:`gateway.audit.keyring`).
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY_FILE = "audit-signing-key"


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id_of(public_b64: str) -> str:
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()[:16]


class Signer:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_key_b64 = base64.b64encode(_raw_public(private.public_key())).decode()
        self.key_id = key_id_of(self.public_key_b64)

    @classmethod
    def from_seed_b64(cls, seed_b64: str) -> Signer:
        seed = base64.b64decode(seed_b64.strip())
        if len(seed) != 32:
            raise ValueError("the audit signing key must be base64 of 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._private.sign(message)).decode()


def verify_signature(public_b64: str, message: bytes, signature_b64: str) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64))
        key.verify(base64.b64decode(signature_b64), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def load_or_create_signer(data_dir: Path, seed_b64: str | None) -> Signer:
    if seed_b64:
        signer = Signer.from_seed_b64(seed_b64)
    else:
        path = data_dir / KEY_FILE
        if path.is_file():
            signer = Signer.from_seed_b64(path.read_text(encoding="ascii"))
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            seed = base64.b64encode(os.urandom(32)).decode()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(seed + "\n")
            signer = Signer.from_seed_b64(seed)
    (data_dir / f"{KEY_FILE}.pub").write_text(signer.public_key_b64 + "\n", encoding="ascii")
    return signer
