"""Audit integrity: signed checkpoints, Merkle frontier, personal data kept outside the hashes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)

_PG_GUARD = """
CREATE TRIGGER audit_checkpoints_no_update_delete BEFORE UPDATE OR DELETE ON audit_checkpoints
  FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
  FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
"""

_SQLITE_GUARD = [
    """CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
       BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only (UPDATE refused)'); END""",
    """CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
       BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only (DELETE refused)'); END""",
]


def upgrade() -> None:
    op.add_column("audit_head", sa.Column("frontier", sa.Text, nullable=False,
                                          server_default="[]"))
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("chain_head", sa.String(64), nullable=False),
        sa.Column("merkle_root", sa.String(64), nullable=False),
        sa.Column("frontier", sa.Text, nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "personal_data",
        sa.Column("decision_id", sa.String(40), primary_key=True),
        sa.Column("field", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
    )
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("categories", sa.String(200), nullable=False,
                                   server_default=""))
        batch.add_column(sa.Column("erased_at", _TS))
    op.create_index("ix_decisions_user", "decisions", ["user"])
    # keyset pagination and streaming exports walk (created_at, id)
    op.create_index("ix_decisions_created_id", "decisions", ["created_at", "id"])
    op.drop_index("ix_decisions_tenant_created", "decisions")
    op.create_index("ix_decisions_tenant_created", "decisions", ["tenant_id", "created_at", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_GUARD)
    else:
        for statement in _SQLITE_GUARD:
            op.execute(statement)


def downgrade() -> None:
    op.drop_index("ix_decisions_tenant_created", "decisions")
    op.create_index("ix_decisions_tenant_created", "decisions", ["tenant_id", "created_at"])
    op.drop_index("ix_decisions_created_id", "decisions")
    op.drop_index("ix_decisions_user", "decisions")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("erased_at")
        batch.drop_column("categories")
    op.drop_table("personal_data")
    op.drop_table("audit_checkpoints")
    with op.batch_alter_table("audit_head") as batch:
        batch.drop_column("frontier")
