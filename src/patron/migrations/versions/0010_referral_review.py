"""referral review queue and referral milestones

Revision ID: 0010_referral_review
Revises: 0009_merge
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0010_referral_review"
down_revision = "0009_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    with op.batch_alter_table("referrals") as batch:
        batch.add_column(sa.Column("reason", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("reviewed_at", ts(), nullable=True))
        batch.add_column(sa.Column("milestones", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("referrals") as batch:
        batch.drop_column("milestones")
        batch.drop_column("reviewed_at")
        batch.drop_column("reason")
