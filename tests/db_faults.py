"""Real database faults for tests and bench/faults.py: a held SQLite lock, killed PostgreSQL.

``DatabaseFault(url).on()`` breaks the database for everyone else, ``off()`` heals it:

- SQLite: another connection holds the write lock (``BEGIN IMMEDIATE``), so every writer
  (the gateway begins every transaction that way) waits its busy timeout and fails with
  ``database is locked``.
- PostgreSQL: the database stops taking connections (``ALLOW_CONNECTIONS false``) and every
  backend connected to it is terminated, from an admin connection to another database;
  ``off()`` allows connections again.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from sqlalchemy import create_engine, text


class DatabaseFault:
    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite: sqlite3.Connection | None = None
        self.is_on = False

    def on(self) -> None:
        if self.url.startswith("sqlite"):
            conn = sqlite3.connect(
                self.url.split("///", 1)[1],
                isolation_level=None,
                timeout=30,
                check_same_thread=False,  # healed from another thread
            )
            conn.execute("BEGIN IMMEDIATE")
            self._sqlite = conn
        else:
            self._pg(allow=False)
        self.is_on = True

    def off(self) -> None:
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
            self._sqlite = None
        elif self.is_on:
            self._pg(allow=True)
        self.is_on = False

    def for_seconds(self, seconds: float) -> threading.Thread:
        """Break the database now and heal it ``seconds`` later, in the background."""
        self.on()

        def heal() -> None:
            time.sleep(seconds)
            self.off()

        thread = threading.Thread(target=heal, daemon=True)
        thread.start()
        return thread

    def _pg(self, *, allow: bool) -> None:
        base, _, name = self.url.rpartition("/")
        admin_url = base.replace("postgresql://", "postgresql+psycopg://", 1) + "/postgres"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {allow!s}'))
                if not allow:
                    conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = :name AND pid <> pg_backend_pid()"
                        ),
                        {"name": name},
                    )
        finally:
            admin.dispose()
