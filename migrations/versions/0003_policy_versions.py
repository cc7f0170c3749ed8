"""Policy versions in the database: drafts, review, four-eyes publishing.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)

_PG_GUARD = """
CREATE FUNCTION policy_versions_frozen() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    RAISE EXCEPTION 'policy_versions rows cannot be deleted';
  END IF;
  IF OLD.status <> 'draft' AND (NEW.files IS DISTINCT FROM OLD.files
                                OR NEW.sha256 IS DISTINCT FROM OLD.sha256) THEN
    RAISE EXCEPTION 'policy version % is no longer a draft: its files are immutable', OLD.id;
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER policy_versions_guard BEFORE UPDATE OR DELETE ON policy_versions
  FOR EACH ROW EXECUTE FUNCTION policy_versions_frozen();
"""

_SQLITE_GUARD = [
    """CREATE TRIGGER policy_versions_frozen BEFORE UPDATE OF files, sha256 ON policy_versions
       WHEN OLD.status <> 'draft'
       BEGIN SELECT RAISE(ABORT, 'policy version is no longer a draft: its files are immutable');
       END""",
    """CREATE TRIGGER policy_versions_no_delete BEFORE DELETE ON policy_versions
       BEGIN SELECT RAISE(ABORT, 'policy_versions rows cannot be deleted'); END""",
]


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("files", sa.Text, nullable=False),
        sa.Column("base_version", sa.Integer),
        sa.Column("note", sa.Text),
        sa.Column("authors", sa.JSON, nullable=False),
        sa.Column("created_by", sa.String(120), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("submitted_by", sa.String(120)),
        sa.Column("submitted_at", _TS),
        sa.Column("decided_by", sa.String(120)),
        sa.Column("decided_at", _TS),
        sa.Column("reason", sa.Text),
        sa.Column("effective_at", _TS),
        sa.Column("retired_at", _TS),
    )
    op.create_index("ix_policy_versions_status", "policy_versions", ["status"])
    op.create_index("ix_policy_versions_effective_at", "policy_versions", ["effective_at"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_GUARD)
    else:
        for statement in _SQLITE_GUARD:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS policy_versions_guard ON policy_versions")
        op.execute("DROP FUNCTION IF EXISTS policy_versions_frozen()")
    op.drop_table("policy_versions")
