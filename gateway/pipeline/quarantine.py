"""Where quarantined images are kept, so that any replica can reveal them to an auditor.

Two stores behind one narrow interface (:class:`QuarantineStore`: ``put`` and ``get``):

- :class:`DatabaseQuarantine` (the default): the ``quarantine_images`` table of the shared
  database, capped per image (``GATEWAY_QUARANTINE_MAX_IMAGE_BYTES``) and in total
  (``GATEWAY_QUARANTINE_MAX_TOTAL_BYTES``);
- :class:`FsspecQuarantine`: any fsspec URL (``GATEWAY_QUARANTINE_URL``, e.g.
  ``s3://bucket/quarantine`` with s3fs installed, or ``file:///mnt/shared/quarantine``),
  capped per image; the bucket's own quotas and lifecycle rules bound the total.

A store that cannot keep an image raises :class:`QuarantineRefused` with the reason; the
pipeline then refuses the request (fail closed: a quarantined image is never dropped
silently).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gateway.db.engine import unit_of_work
from gateway.db.models import QuarantineImage
from gateway.settings import Settings

_DECISION_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_LOCK = 0x71756172  # the advisory lock that serialises quarantine writes on PostgreSQL ("quar")


class QuarantineRefused(Exception):
    """The store did not keep the image (over a cap, or the store failed)."""


@dataclass(frozen=True)
class QuarantinedImage:
    decision_id: str
    index: int
    mime: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class QuarantineStore(Protocol):
    """Keeps a decision's quarantined images; any replica reads them back."""

    def put(self, image: QuarantinedImage) -> None: ...

    def get(self, decision_id: str, index: int) -> QuarantinedImage | None: ...


class DatabaseQuarantine:
    """In the shared database, capped per image and in total."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        instance_id: str,
        *,
        max_image_bytes: int,
        max_total_bytes: int,
    ) -> None:
        self._sessions = sessions
        self._instance_id = instance_id
        self.max_image_bytes = max_image_bytes
        self.max_total_bytes = max_total_bytes

    def put(self, image: QuarantinedImage) -> None:
        size = len(image.data)
        _check_image_cap(size, self.max_image_bytes)
        try:
            with unit_of_work(self._sessions) as session:
                if session.get_bind().dialect.name == "postgresql":
                    # one writer at a time across replicas between the sum and the insert, or
                    # each could see room for its image and all of them exceed the cap together
                    # (SQLite's BEGIN IMMEDIATE already serialises writers)
                    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
                used = session.scalar(select(func.coalesce(func.sum(QuarantineImage.size), 0)))
                if int(used or 0) + size > self.max_total_bytes:
                    raise QuarantineRefused(
                        f"the quarantine store is full: {used} of "
                        f"{self.max_total_bytes} bytes used, this image needs {size} "
                        "(GATEWAY_QUARANTINE_MAX_TOTAL_BYTES)"
                    )
                session.add(
                    QuarantineImage(
                        decision_id=image.decision_id,
                        image_index=image.index,
                        mime=image.mime,
                        size=size,
                        sha256=image.sha256,
                        data=image.data,
                        instance_id=self._instance_id,
                        created_at=datetime.now(UTC),
                    )
                )
        except IntegrityError as exc:
            raise QuarantineRefused(
                f"image {image.index} of decision {image.decision_id} is already quarantined"
            ) from exc

    def get(self, decision_id: str, index: int) -> QuarantinedImage | None:
        with unit_of_work(self._sessions) as session:
            row = session.get(QuarantineImage, (decision_id, index))
            if row is None:
                return None
            return QuarantinedImage(row.decision_id, row.image_index, row.mime, row.data)


class FsspecQuarantine:
    """Under an fsspec URL: ``<url>/<decision id>/<index>.png``, capped per image."""

    def __init__(self, url: str, *, max_image_bytes: int, **storage_options: Any) -> None:
        import fsspec

        self._fs, root = fsspec.core.url_to_fs(url, **storage_options)
        self._root = str(root).rstrip("/")
        self.url = url
        self.max_image_bytes = max_image_bytes

    def _path(self, decision_id: str, index: int) -> str:
        if not _DECISION_ID.match(decision_id) or index < 0:
            raise ValueError("not a decision id and image index")
        return f"{self._root}/{decision_id}/{index}.png"

    def put(self, image: QuarantinedImage) -> None:
        _check_image_cap(len(image.data), self.max_image_bytes)
        path = self._path(image.decision_id, image.index)
        try:
            self._fs.makedirs(path.rpartition("/")[0], exist_ok=True)
            with self._fs.open(path, "xb") as fh:  # never overwrite a kept image
                fh.write(image.data)
        except FileExistsError as exc:
            raise QuarantineRefused(
                f"image {image.index} of decision {image.decision_id} is already quarantined"
            ) from exc
        except OSError as exc:
            raise QuarantineRefused(f"the quarantine store {self.url} failed: {exc}") from exc

    def get(self, decision_id: str, index: int) -> QuarantinedImage | None:
        try:
            path = self._path(decision_id, index)
        except ValueError:
            return None
        try:
            with self._fs.open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        return QuarantinedImage(decision_id, index, "image/png", bytes(data))


def _check_image_cap(size: int, cap: int) -> None:
    if size > cap:
        raise QuarantineRefused(
            f"the image is {size} bytes, over the quarantine cap of {cap} bytes per image "
            "(GATEWAY_QUARANTINE_MAX_IMAGE_BYTES)"
        )


def quarantine_from_settings(
    settings: Settings, sessions: sessionmaker[Session]
) -> QuarantineStore:
    if settings.quarantine_url:
        return FsspecQuarantine(
            settings.quarantine_url, max_image_bytes=settings.quarantine_max_image_bytes
        )
    return DatabaseQuarantine(
        sessions,
        settings.instance_id,
        max_image_bytes=settings.quarantine_max_image_bytes,
        max_total_bytes=settings.quarantine_max_total_bytes,
    )
