"""surveys and cases: survey responses, follow-up cases with their timeline, member risk

Revision ID: 0011_surveys_cases
Revises: 0010_referral_review
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0011_surveys_cases"
down_revision = "0010_referral_review"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    op.create_table(
        "survey_responses",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("program_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("recommend", sa.Integer(), nullable=True),
        sa.Column("buy_again", sa.Integer(), nullable=True),
        sa.Column("try_other", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("body_hash", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.String(length=40), nullable=True),
        sa.Column("event_id", sa.String(length=40), nullable=True),
        sa.Column("occurred_at", ts(), nullable=False),
        sa.Column("created_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_survey_responses_merchant_id_members"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id", "program_id"],
            ["programs.merchant_id", "programs.id"],
            name=op.f("fk_survey_responses_merchant_id_programs"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_survey_responses")),
        sa.UniqueConstraint(
            "merchant_id", "external_id", name=op.f("uq_survey_responses_merchant_id_external_id")
        ),
    )
    op.create_index(
        op.f("ix_survey_responses_merchant_id_program_id_occurred_at"),
        "survey_responses",
        ["merchant_id", "program_id", "occurred_at"],
    )
    op.create_index(
        op.f("ix_survey_responses_merchant_id_member_id_occurred_at"),
        "survey_responses",
        ["merchant_id", "member_id", "occurred_at"],
    )
    op.create_table(
        "cases",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("program_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("source_ref", sa.String(length=200), nullable=True),
        sa.Column("open_ref", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("assignee", sa.String(length=40), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("opened_at", ts(), nullable=False),
        sa.Column("contacted_at", ts(), nullable=True),
        sa.Column("contact_channel", sa.String(length=50), nullable=True),
        sa.Column("resolved_at", ts(), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("updated_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_cases_merchant_id_members"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id", "assignee"],
            ["users.merchant_id", "users.id"],
            name=op.f("fk_cases_merchant_id_users"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_cases")),
        sa.UniqueConstraint(
            "merchant_id",
            "member_id",
            "source",
            "open_ref",
            name=op.f("uq_cases_merchant_id_member_id_source_open_ref"),
        ),
    )
    op.create_index(op.f("ix_cases_merchant_id_opened_at"), "cases", ["merchant_id", "opened_at"])
    op.create_index(
        op.f("ix_cases_merchant_id_status_opened_at"), "cases", ["merchant_id", "status", "opened_at"]
    )
    op.create_index(
        op.f("ix_cases_merchant_id_assignee_opened_at"), "cases", ["merchant_id", "assignee", "opened_at"]
    )
    op.create_table(
        "case_events",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("case_id", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("assignee", sa.String(length=40), nullable=True),
        sa.Column("channel", sa.String(length=50), nullable=True),
        sa.Column("at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "case_id"],
            ["cases.merchant_id", "cases.id"],
            name=op.f("fk_case_events_merchant_id_cases"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_case_events")),
    )
    op.create_index(
        op.f("ix_case_events_merchant_id_case_id_at"), "case_events", ["merchant_id", "case_id", "at"]
    )
    op.create_table(
        "member_risk",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("as_of", ts(), nullable=False),
        sa.Column("program_id", sa.String(length=40), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("purchases", sa.BigInteger(), nullable=False),
        sa.Column("last_purchase_at", ts(), nullable=True),
        sa.Column("recency_days", sa.Integer(), nullable=True),
        sa.Column("p_alive", sa.Float(), nullable=True),
        sa.Column("at_risk", sa.Boolean(), nullable=False),
        sa.Column("case_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_member_risk_merchant_id_members"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "member_id", "as_of", name=op.f("pk_member_risk")),
    )
    op.create_index(
        op.f("ix_member_risk_merchant_id_program_id_as_of"),
        "member_risk",
        ["merchant_id", "program_id", "as_of"],
    )


def downgrade() -> None:
    op.drop_table("member_risk")
    op.drop_table("case_events")
    op.drop_table("cases")
    op.drop_table("survey_responses")
