"""Decisions carry the watermark payload reserved for their images, indexed for verify.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("decisions", sa.Column("watermark", sa.String(16), nullable=True))
    op.create_index("ix_decisions_watermark", "decisions", ["watermark"])


def downgrade() -> None:
    op.drop_index("ix_decisions_watermark", table_name="decisions")
    op.drop_column("decisions", "watermark")
