"""each member's current RFM segment, for targeting

Revision ID: 0013_member_segments
Revises: 0012_merge_plan_floors
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0013_member_segments"
down_revision = "0012_merge_plan_floors"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    op.create_table(
        "member_segments",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("program_id", sa.String(length=40), nullable=False),
        sa.Column("segment", sa.String(length=40), nullable=False),
        sa.Column("as_of", ts(), nullable=False),
        sa.Column("computed_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name="fk_member_segments_merchant_id_members",
        ),
        sa.PrimaryKeyConstraint("merchant_id", "member_id", name="pk_member_segments"),
    )
    op.create_index(
        "ix_member_segments_merchant_id_program_id_segment",
        "member_segments",
        ["merchant_id", "program_id", "segment"],
    )


def downgrade() -> None:
    op.drop_table("member_segments")
