"""memberships: paid plans, payments, state history, store credit in money, co-op dividends

Revision ID: 0011_memberships
Revises: 0010_referral_review
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0011_memberships"
down_revision = "0010_referral_review"
branch_labels = None
depends_on = None

ID = sa.String(length=40)


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    op.create_table(
        "memberships",
        sa.Column("merchant_id", ID, nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("program_id", ID, nullable=False),
        sa.Column("plan_id", sa.String(length=100), nullable=False),
        sa.Column("interval", sa.String(length=20), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("grace_days", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("started_at", ts(), nullable=False),
        sa.Column("trial_ends_at", ts(), nullable=True),
        sa.Column("anchor_at", ts(), nullable=True),
        sa.Column("periods_paid", sa.Integer(), nullable=False),
        sa.Column("paid_through", ts(), nullable=True),
        sa.Column("cancelled_at", ts(), nullable=True),
        sa.Column("external_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", ts(), nullable=False),
        sa.Column("updated_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_memberships_merchant_id_members"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id", "program_id"],
            ["programs.merchant_id", "programs.id"],
            name=op.f("fk_memberships_merchant_id_programs"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_memberships")),
        sa.UniqueConstraint(
            "merchant_id", "external_id", name=op.f("uq_memberships_merchant_id_external_id")
        ),
    )
    op.create_index(
        op.f("ix_memberships_merchant_id_program_id_state"),
        "memberships",
        ["merchant_id", "program_id", "state"],
    )
    op.create_index(
        op.f("ix_memberships_merchant_id_member_id_plan_id"),
        "memberships",
        ["merchant_id", "member_id", "plan_id"],
    )
    op.create_table(
        "membership_events",
        sa.Column("merchant_id", ID, nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("membership_id", ID, nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("from_state", sa.String(length=20), nullable=True),
        sa.Column("to_state", sa.String(length=20), nullable=False),
        sa.Column("at", ts(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("recorded_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "membership_id"],
            ["memberships.merchant_id", "memberships.id"],
            name=op.f("fk_membership_events_merchant_id_memberships"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_membership_events")),
        sa.UniqueConstraint(
            "merchant_id",
            "membership_id",
            "kind",
            "to_state",
            "at",
            name=op.f("uq_membership_events_merchant_id_membership_id_kind_to_state_at"),
        ),
    )
    op.create_table(
        "membership_payments",
        sa.Column("merchant_id", ID, nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("membership_id", ID, nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("paid_at", ts(), nullable=False),
        sa.Column("period", sa.Integer(), nullable=False),
        sa.Column("period_start", ts(), nullable=False),
        sa.Column("period_end", ts(), nullable=True),
        sa.Column("external_ref", sa.String(length=200), nullable=False),
        sa.Column("created_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "membership_id"],
            ["memberships.merchant_id", "memberships.id"],
            name=op.f("fk_membership_payments_merchant_id_memberships"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_membership_payments")),
        sa.UniqueConstraint(
            "merchant_id", "external_ref", name=op.f("uq_membership_payments_merchant_id_external_ref")
        ),
        sa.UniqueConstraint(
            "merchant_id",
            "membership_id",
            "period",
            name=op.f("uq_membership_payments_merchant_id_membership_id_period"),
        ),
    )
    op.create_table(
        "store_credit_entries",
        sa.Column("merchant_id", ID, nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("program_id", ID, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source_ref", sa.String(length=200), nullable=True),
        sa.Column("occurred_at", ts(), nullable=False),
        sa.Column("created_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_store_credit_entries_merchant_id_members"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_store_credit_entries")),
        sa.UniqueConstraint(
            "merchant_id", "source_ref", name=op.f("uq_store_credit_entries_merchant_id_source_ref")
        ),
    )
    op.create_index(
        op.f("ix_store_credit_entries_merchant_id_member_id_occurred_at"),
        "store_credit_entries",
        ["merchant_id", "member_id", "occurred_at"],
    )
    op.create_table(
        "dividend_runs",
        sa.Column("merchant_id", ID, nullable=False),
        sa.Column("id", ID, nullable=False),
        sa.Column("program_id", ID, nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("percent", sa.String(length=20), nullable=False),
        sa.Column("min_spend", sa.BigInteger(), nullable=False),
        sa.Column("full_price_only", sa.Boolean(), nullable=False),
        sa.Column("plans", sa.JSON(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("period_start", ts(), nullable=False),
        sa.Column("period_end", ts(), nullable=False),
        sa.Column("as_of", ts(), nullable=False),
        sa.Column("members_paid", sa.Integer(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("created_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "program_id"],
            ["programs.merchant_id", "programs.id"],
            name=op.f("fk_dividend_runs_merchant_id_programs"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_dividend_runs")),
        sa.UniqueConstraint(
            "merchant_id", "program_id", "year", name=op.f("uq_dividend_runs_merchant_id_program_id_year")
        ),
    )
    op.create_table(
        "dividend_payouts",
        sa.Column("merchant_id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("member_id", ID, nullable=False),
        sa.Column("eligible_spend", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("credit_id", ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "run_id"],
            ["dividend_runs.merchant_id", "dividend_runs.id"],
            name=op.f("fk_dividend_payouts_merchant_id_dividend_runs"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_dividend_payouts_merchant_id_members"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "run_id", "member_id", name=op.f("pk_dividend_payouts")),
    )
    op.create_index(
        op.f("ix_dividend_payouts_merchant_id_member_id"), "dividend_payouts", ["merchant_id", "member_id"]
    )


def downgrade() -> None:
    op.drop_table("dividend_payouts")
    op.drop_table("dividend_runs")
    op.drop_table("store_credit_entries")
    op.drop_table("membership_payments")
    op.drop_table("membership_events")
    op.drop_table("memberships")
