"""Apply Alembic migrations programmatically (on start and from `gateway db upgrade`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config


def alembic_config(url: str, migrations_dir: Path) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, migrations_dir: Path, revision: str = "head") -> None:
    command.upgrade(alembic_config(url, migrations_dir), revision)
