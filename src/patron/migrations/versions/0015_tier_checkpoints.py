"""tier checkpoints: an event folds its member's tier from the current period, not enrolment

Revision ID: 0015_tier_checkpoints
Revises: 0014_deliveries_by_event
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0015_tier_checkpoints"
down_revision = "0014_deliveries_by_event"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    op.create_table(
        "tier_checkpoints",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("period_start", ts(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("given", sa.String(length=64), nullable=False),
        sa.Column("earned_id", sa.String(length=100), nullable=True),
        sa.Column("level_id", sa.String(length=100), nullable=True),
        sa.Column("since", ts(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("seen_upto", ts(), nullable=False),
        sa.Column("written_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name="fk_tier_checkpoints_merchant_id_members",
        ),
        sa.PrimaryKeyConstraint("merchant_id", "member_id", "period_start", name="pk_tier_checkpoints"),
    )
    op.create_index(
        "ix_qualifications_merchant_id_member_id_period_at_recorded_at",
        "qualifications",
        ["merchant_id", "member_id", "period_at", "recorded_at"],
    )
    op.drop_index("ix_qualifications_merchant_id_member_id_period_at", table_name="qualifications")


def downgrade() -> None:
    op.create_index(
        "ix_qualifications_merchant_id_member_id_period_at",
        "qualifications",
        ["merchant_id", "member_id", "period_at"],
    )
    op.drop_index("ix_qualifications_merchant_id_member_id_period_at_recorded_at", table_name="qualifications")
    op.drop_table("tier_checkpoints")
