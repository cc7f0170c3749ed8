"""C2PA signing credentials and the watermark key, from settings or created on first start.

* Operator credentials: ``GATEWAY_C2PA_CERT_CHAIN`` (PEM, signing certificate first) and
  ``GATEWAY_C2PA_PRIVATE_KEY`` (PEM). Both or neither.
* Otherwise, on first start, a local CA (ECDSA P-256, CA:TRUE) and a signing certificate
  issued by it (ES256, with what C2PA validation needs: AuthorityKeyIdentifier, EKU
  emailProtection, KU digitalSignature, CA:FALSE) are written beside the audit signing key:
  ``c2pa-ca.pem`` (give it to verifiers), ``c2pa-signing-chain.pem`` and
  ``c2pa-signing-key.pem`` (0600). The CA's key is not kept. These credentials are **not
  publicly trusted** until the operator configures a CA-issued certificate.
* The watermark key: ``GATEWAY_WATERMARK_KEY`` (base64 of 32 bytes) or ``watermark-key``
  (0600), created on first start.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "c2pa-ca.pem"
CHAIN_FILE = "c2pa-signing-chain.pem"
KEY_FILE = "c2pa-signing-key.pem"
WATERMARK_KEY_FILE = "watermark-key"
LOCAL_CA_NAME = "Governed image gateway local C2PA CA (not publicly trusted)"


@dataclass(frozen=True)
class SigningCredentials:
    chain_pem: bytes  # signing certificate first
    key_pem: bytes
    alg: str  # es256 | es384 | es512 | ps256 | ps384 | ps512 | ed25519
    anchors_pem: str  # roots a verifier here trusts (the local CA, or the chain's last cert)
    locally_generated: bool

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.chain_pem)[0]

    @property
    def certificate_serial(self) -> str:
        return str(self.certificate.serial_number)

    @property
    def certificate_sha256(self) -> str:
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return hashlib.sha256(der).hexdigest()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Governed image gateway"),
        ]
    )


def _key_usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def generate_local_ca(instance: str) -> tuple[bytes, bytes, bytes]:
    """(CA certificate PEM, signing chain PEM, signing key PEM) for ES256 C2PA signing."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(LOCAL_CA_NAME))
        .issuer_name(_name(LOCAL_CA_NAME))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign=False, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(f"C2PA signer {instance}"[:64]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign=True, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem)
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca_pem, leaf.public_bytes(pem) + ca_pem, key_pem


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def load_or_create_credentials(
    data_dir: Path,
    cert_chain: Path | None,
    private_key: Path | None,
    alg: str,
    trust_anchors: Path | None,
    instance: str,
) -> SigningCredentials:
    """The operator's credentials, or the local ones (created once, then reused)."""
    if (cert_chain is None) != (private_key is None):
        raise ValueError(
            "set both GATEWAY_C2PA_CERT_CHAIN and GATEWAY_C2PA_PRIVATE_KEY, or neither"
        )
    if cert_chain is not None and private_key is not None:
        chain = cert_chain.read_bytes()
        certs = x509.load_pem_x509_certificates(chain)
        anchors = (
            trust_anchors.read_text(encoding="ascii")
            if trust_anchors
            else certs[-1].public_bytes(serialization.Encoding.PEM).decode("ascii")
        )
        return SigningCredentials(chain, private_key.read_bytes(), alg, anchors, False)
    data_dir.mkdir(parents=True, exist_ok=True)
    ca_path, chain_path, key_path = (data_dir / n for n in (CA_FILE, CHAIN_FILE, KEY_FILE))
    if not key_path.is_file():
        ca_pem, chain_pem, key_pem = generate_local_ca(instance)
        _write_private(key_path, key_pem)
        chain_path.write_bytes(chain_pem)
        ca_path.write_bytes(ca_pem)
    anchors = trust_anchors.read_text(encoding="ascii") if trust_anchors else ""
    anchors += ca_path.read_text(encoding="ascii")
    return SigningCredentials(
        chain_path.read_bytes(), key_path.read_bytes(), "es256", anchors, True
    )


def load_or_create_watermark_key(data_dir: Path, key_b64: str | None) -> bytes:
    if key_b64:
        key = base64.b64decode(key_b64.strip())
    else:
        path = data_dir / WATERMARK_KEY_FILE
        if not path.is_file():
            data_dir.mkdir(parents=True, exist_ok=True)
            _write_private(path, base64.b64encode(os.urandom(32)) + b"\n")
        key = base64.b64decode(path.read_bytes().strip())
    if len(key) < 16:
        raise ValueError("the watermark key must be base64 of at least 16 bytes")
    return key
