"""referrals

Revision ID: 0005_referrals
Revises: 0004_tier_changes
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0005_referrals"
down_revision = "0004_tier_changes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    op.create_table(
        "referrals",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("referee_id", sa.String(length=40), nullable=False),
        sa.Column("referrer_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("referrer_points", sa.BigInteger(), nullable=False),
        sa.Column("referee_points", sa.BigInteger(), nullable=False),
        sa.Column("completed_at", ts(), nullable=False),
        sa.Column("revoked_at", ts(), nullable=True),
        sa.PrimaryKeyConstraint("merchant_id", "referee_id", name=op.f("pk_referrals")),
    )
    op.create_index(op.f("ix_referrals_merchant_id_referrer_id"), "referrals", ["merchant_id", "referrer_id"])


def downgrade() -> None:
    op.drop_table("referrals")
