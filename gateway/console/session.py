"""The console's session cookie: the API key, a CSRF token and an expiry, encrypted.

The cookie is a Fernet token (AES-128-CBC + HMAC-SHA256) so the key never travels or rests
in the browser in clear, and a cookie that was altered, forged or is past its expiry is
refused. The Fernet key comes from ``GATEWAY_CONSOLE_SECRET`` or, when that is unset, from
``<data dir>/console.key`` (created 0600 on first start). Replicas must share it, so that a
cookie made by one opens on another: the first replica pins its fingerprint in the database
and a replica holding another key refuses to start (:mod:`gateway.shared_secrets`). Every
request re-authenticates the key inside, so a revoked key is locked out at once.

A visitor who has not signed in gets a session without a key: it carries the CSRF token of
the sign-in form.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from starlette.responses import Response

from gateway.settings import Settings

COOKIE = "gw_console"
COOKIE_PATH = "/console"
KEY_FILE = "console.key"
SIGNED_OUT_TTL_S = 3600  # how long a sign-in form stays usable
FLASH_COOKIE = "gw_flash"
FLASH_TTL_S = 120  # a refusal shown after a redirect; read once


@dataclass(frozen=True)
class ConsoleSession:
    key: str | None  # None: not signed in (the sign-in form's session)
    csrf: str
    expires: int  # unix seconds

    def csrf_matches(self, submitted: object) -> bool:
        return isinstance(submitted, str) and hmac.compare_digest(
            submitted.encode(), self.csrf.encode()
        )


def load_or_create_secret(data_dir: Path, configured: str | None) -> bytes:
    """The Fernet key: the configured one, else the one in ``data_dir`` (made if missing)."""
    if configured:
        return configured.strip().encode()
    path = data_dir / KEY_FILE
    if not path.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile
            pass
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(Fernet.generate_key() + b"\n")
    return path.read_bytes().strip()


class SessionCodec:
    """Makes, reads and sets session cookies."""

    def __init__(self, secret: bytes, *, secure: bool, lifetime_s: int) -> None:
        try:
            self._fernet = Fernet(secret)
        except ValueError as exc:
            raise ValueError(
                "the console secret must be a Fernet key (urlsafe base64 of 32 bytes)"
            ) from exc
        self.secure = secure
        self.lifetime_s = lifetime_s

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionCodec:
        configured = settings.console_secret.get_secret_value() if settings.console_secret else None
        return cls(
            load_or_create_secret(settings.data_dir, configured),
            secure=settings.console_cookie_secure,
            lifetime_s=int(settings.console_session_hours * 3600),
        )

    def new(self, key: str | None) -> ConsoleSession:
        """A fresh session (and CSRF token): signed in with ``key``, or signed out."""
        ttl = self.lifetime_s if key else min(self.lifetime_s, SIGNED_OUT_TTL_S)
        return ConsoleSession(key=key, csrf=secrets.token_urlsafe(32), expires=_now() + ttl)

    def encode(self, session: ConsoleSession) -> str:
        payload = {"k": session.key, "c": session.csrf, "e": session.expires}
        return self._fernet.encrypt(json.dumps(payload, separators=(",", ":")).encode()).decode()

    def decode(self, token: str | None) -> ConsoleSession | None:
        """The session in a cookie; None when missing, altered, forged or expired."""
        if not token:
            return None
        try:
            raw = self._fernet.decrypt(token.encode(), ttl=self.lifetime_s)
            payload = json.loads(raw)
            key, csrf, expires = payload["k"], payload["c"], payload["e"]
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None
        if not (key is None or isinstance(key, str)) or not isinstance(csrf, str):
            return None
        if not isinstance(expires, int) or expires <= _now():
            return None
        return ConsoleSession(key=key, csrf=csrf, expires=expires)

    def set_cookie(self, response: Response, session: ConsoleSession) -> None:
        response.set_cookie(
            COOKIE,
            self.encode(session),
            max_age=max(0, session.expires - _now()),
            expires=session.expires - _now(),
            path=COOKIE_PATH,
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(
            COOKIE, path=COOKIE_PATH, secure=self.secure, httponly=True, samesite="strict"
        )

    # -- a refusal carried across a post-redirect-get --------------------------------------

    def set_flash(self, response: Response, payload: dict[str, Any]) -> None:
        """A short-lived encrypted cookie with what the next page must show (a refusal)."""
        token = self._fernet.encrypt(json.dumps(payload, separators=(",", ":")).encode())
        response.set_cookie(
            FLASH_COOKIE,
            token.decode(),
            max_age=FLASH_TTL_S,
            path=COOKIE_PATH,
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    def read_flash(self, token: str | None) -> dict[str, Any] | None:
        if not token:
            return None
        try:
            value = json.loads(self._fernet.decrypt(token.encode(), ttl=FLASH_TTL_S))
        except (InvalidToken, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def clear_flash(self, response: Response) -> None:
        response.delete_cookie(
            FLASH_COOKIE, path=COOKIE_PATH, secure=self.secure, httponly=True, samesite="strict"
        )


def _now() -> int:
    return int(time.time())
