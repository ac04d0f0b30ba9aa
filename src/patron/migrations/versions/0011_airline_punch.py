"""status miles and segments as tier currencies; punch cards

Revision ID: 0011_airline_punch
Revises: 0010_referral_review
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0011_airline_punch"
down_revision = "0010_referral_review"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    with op.batch_alter_table("qualifications") as batch:
        batch.add_column(sa.Column("status_miles", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("segments", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("redemptions") as batch:
        batch.alter_column("reserve_journal_id", existing_type=sa.String(length=40), nullable=True)
    op.create_table(
        "punches",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("rule_id", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("location_id", sa.String(length=100), nullable=True),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("redemption_id", sa.String(length=40), nullable=True),
        sa.Column("occurred_at", ts(), nullable=False),
        sa.Column("created_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name="fk_punches_merchant_id_members",
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name="pk_punches"),
    )
    op.create_index(
        "ix_punches_merchant_id_member_id_rule_id_occurred_at",
        "punches",
        ["merchant_id", "member_id", "rule_id", "occurred_at"],
    )
    op.create_index("ix_punches_merchant_id_event_id", "punches", ["merchant_id", "event_id"])


def downgrade() -> None:
    op.drop_table("punches")
    with op.batch_alter_table("qualifications") as batch:
        batch.drop_column("segments")
        batch.drop_column("status_miles")
