"""Replica-safe shared state: registered audit keys, quarantined images, shared-secret pins.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "audit_keys",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("registered_at", _TS, nullable=False),
        sa.Column("note", sa.String(200)),
        sa.Column("retired_at", _TS),
        # the trail's size when the key was retired: its checkpoints above it are refused
        sa.Column("retired_at_seq", sa.BigInteger),
    )
    op.create_table(
        "quarantine_images",
        sa.Column("decision_id", sa.String(40), primary_key=True),
        sa.Column("image_index", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("mime", sa.String(40), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("instance_id", sa.String(200), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_table(
        "shared_secrets",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("instance_id", sa.String(200), nullable=False),
        sa.Column("recorded_at", _TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("shared_secrets")
    op.drop_table("quarantine_images")
    op.drop_table("audit_keys")
