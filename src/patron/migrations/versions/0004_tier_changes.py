"""tier changes recorded by requalification

Revision ID: 0004_tier_changes
Revises: 0003_tiers
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0004_tier_changes"
down_revision = "0003_tiers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    op.create_table(
        "tier_changes",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("at", ts(), nullable=False),
        sa.Column("to_tier", sa.String(length=100), nullable=False),
        sa.Column("from_tier", sa.String(length=100), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("cause", sa.String(length=20), nullable=False),
        sa.Column("job_run_id", sa.String(length=40), nullable=True),
        sa.Column("recorded_at", ts(), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", "member_id", "at", "to_tier", name=op.f("pk_tier_changes")),
    )


def downgrade() -> None:
    op.drop_table("tier_changes")
