"""redemptions

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    op.create_table(
        "redemptions",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("program_id", sa.String(length=40), nullable=False),
        sa.Column("reward_id", sa.String(length=100), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("grants", sa.JSON(), nullable=False),
        sa.Column("location_id", sa.String(length=100), nullable=True),
        sa.Column("reserve_journal_id", sa.String(length=40), nullable=False),
        sa.Column("settle_journal_id", sa.String(length=40), nullable=True),
        sa.Column("reserved_at", ts(), nullable=False),
        sa.Column("expires_at", ts(), nullable=False),
        sa.Column("settled_at", ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_redemptions_merchant_id_members"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_redemptions")),
        sa.UniqueConstraint("merchant_id", "code", name=op.f("uq_redemptions_merchant_id_code")),
    )
    with op.batch_alter_table("redemptions") as batch:
        batch.create_index(
            batch.f("ix_redemptions_merchant_id_member_id_reserved_at"), ["merchant_id", "member_id", "reserved_at"]
        )
        batch.create_index(
            batch.f("ix_redemptions_merchant_id_program_id_reward_id_status"),
            ["merchant_id", "program_id", "reward_id", "status"],
        )
        batch.create_index(
            batch.f("ix_redemptions_merchant_id_status_expires_at"), ["merchant_id", "status", "expires_at"]
        )


def downgrade() -> None:
    op.drop_table("redemptions")
