"""tier assignments, milestones, job runs

Revision ID: 0003_tiers
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0003_tiers"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    op.create_table(
        "tier_assignments",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("tier_id", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("starts_at", ts(), nullable=False),
        sa.Column("ends_at", ts(), nullable=True),
        sa.Column("created_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_tier_assignments_merchant_id_members"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_tier_assignments")),
    )
    op.create_index(
        op.f("ix_tier_assignments_merchant_id_member_id"), "tier_assignments", ["merchant_id", "member_id"]
    )
    op.create_table(
        "member_milestones",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("milestone_id", sa.String(length=100), nullable=False),
        sa.Column("reached_at", ts(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("journal_id", sa.String(length=40), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_member_milestones_merchant_id_members"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "member_id", "milestone_id", name=op.f("pk_member_milestones")),
    )
    op.create_table(
        "job_runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("merchant_id", sa.String(length=40), nullable=True),
        sa.Column("as_of", ts(), nullable=False),
        sa.Column("started_at", ts(), nullable=False),
        sa.Column("finished_at", ts(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_runs")),
    )
    op.create_index(op.f("ix_job_runs_name_started_at"), "job_runs", ["name", "started_at"])


def downgrade() -> None:
    op.drop_table("job_runs")
    op.drop_table("member_milestones")
    op.drop_table("tier_assignments")
