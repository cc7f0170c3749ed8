"""The first admin key: created on the very first start, shown once, saved 0600."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from gateway.auth.keys import count_keys, create_key
from gateway.db.engine import unit_of_work
from gateway.domain import Role

KEY_FILE = "bootstrap-admin-key"


def bootstrap_admin_key(
    sessions: sessionmaker[Session], data_dir: Path, pepper: str = ""
) -> str | None:
    """Create an admin key if the database has no key at all; return it (else None)."""
    with unit_of_work(sessions) as session:
        if count_keys(session) > 0:
            return None
        created = create_key(
            session, tenant="default", roles=[Role.ADMIN], pepper=pepper, label="bootstrap admin"
        )
        path = data_dir / KEY_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(created.secret + "\n")
        os.chmod(path, 0o600)
    return created.secret
