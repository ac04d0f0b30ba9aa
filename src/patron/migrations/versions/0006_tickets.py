"""tickets: members-only events with capacity, RSVP, waitlist and check-in

Revision ID: 0006_tickets
Revises: 0005_referrals
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0006_tickets"
down_revision = "0005_referrals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    op.create_table(
        "ticketed_events",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("program_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("place", sa.Text(), nullable=False),
        sa.Column("starts_at", ts(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("audience", sa.JSON(), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("waitlist", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "program_id"],
            ["programs.merchant_id", "programs.id"],
            name=op.f("fk_ticketed_events_merchant_id_programs"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_ticketed_events")),
    )
    op.create_index(
        op.f("ix_ticketed_events_merchant_id_program_id_starts_at"),
        "ticketed_events",
        ["merchant_id", "program_id", "starts_at"],
    )
    op.create_table(
        "tickets",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("reserve_journal_id", sa.String(length=40), nullable=True),
        sa.Column("redeem_journal_id", sa.String(length=40), nullable=True),
        sa.Column("return_journal_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", ts(), nullable=False),
        sa.Column("issued_at", ts(), nullable=True),
        sa.Column("checked_in_at", ts(), nullable=True),
        sa.Column("cancelled_at", ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id", "event_id"],
            ["ticketed_events.merchant_id", "ticketed_events.id"],
            name=op.f("fk_tickets_merchant_id_ticketed_events"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_tickets_merchant_id_members"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_tickets")),
        sa.UniqueConstraint("merchant_id", "code", name=op.f("uq_tickets_merchant_id_code")),
    )
    op.create_index(
        op.f("ix_tickets_merchant_id_event_id_status_created_at"),
        "tickets",
        ["merchant_id", "event_id", "status", "created_at"],
    )
    op.create_index(op.f("ix_tickets_merchant_id_member_id"), "tickets", ["merchant_id", "member_id"])


def downgrade() -> None:
    op.drop_table("tickets")
    op.drop_table("ticketed_events")
