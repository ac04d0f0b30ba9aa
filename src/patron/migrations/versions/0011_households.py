"""households: family pooling, memberships and their audit trail

Revision ID: 0011_households
Revises: 0010_referral_review
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0011_households"
down_revision = "0010_referral_review"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    op.create_table(
        "households",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("program_id", sa.String(length=40), nullable=False),
        sa.Column("head_member_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", ts(), nullable=False),
        sa.Column("dissolved_at", ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id", "program_id"],
            ["programs.merchant_id", "programs.id"],
            name=op.f("fk_households_merchant_id_programs"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id", "head_member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_households_merchant_id_members"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_households")),
    )
    op.create_index(
        op.f("ix_households_merchant_id_program_id"), "households", ["merchant_id", "program_id"]
    )
    op.create_table(
        "household_members",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("household_id", sa.String(length=40), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("can_spend", sa.Boolean(), nullable=False),
        sa.Column("joined_at", ts(), nullable=False),
        sa.Column("left_at", ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_household_members_merchant_id_members"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id", "household_id"],
            ["households.merchant_id", "households.id"],
            name=op.f("fk_household_members_merchant_id_households"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "member_id", name=op.f("pk_household_members")),
    )
    op.create_index(
        op.f("ix_household_members_merchant_id_household_id"),
        "household_members",
        ["merchant_id", "household_id"],
    )
    op.create_table(
        "household_events",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("household_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("occurred_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "household_id"],
            ["households.merchant_id", "households.id"],
            name=op.f("fk_household_events_merchant_id_households"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_household_events_merchant_id_members"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_household_events")),
    )
    op.create_index(
        op.f("ix_household_events_merchant_id_household_id_id"),
        "household_events",
        ["merchant_id", "household_id", "id"],
    )
    op.create_index(
        op.f("ix_household_events_merchant_id_member_id"), "household_events", ["merchant_id", "member_id"]
    )


def downgrade() -> None:
    op.drop_table("household_events")
    op.drop_table("household_members")
    op.drop_table("households")
