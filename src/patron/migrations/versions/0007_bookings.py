"""bookings: travel award bookings, their tickets, passengers' consents and consent codes

Revision ID: 0007_bookings
Revises: 0005_referrals
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0007_bookings"
down_revision = "0005_referrals"
branch_labels = None
depends_on = None


def _id(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.String(length=40), nullable=nullable)


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    op.create_table(
        "travel_consents",
        _id("merchant_id"),
        _id("passenger_id"),
        _id("booker_id"),
        sa.Column("granted_at", ts(), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", "passenger_id", "booker_id", name=op.f("pk_travel_consents")),
        sa.ForeignKeyConstraint(
            ["merchant_id", "passenger_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_travel_consents_merchant_id_passenger_id_members"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id", "booker_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_travel_consents_merchant_id_booker_id_members"),
        ),
    )
    op.create_table(
        "travel_consent_codes",
        _id("merchant_id"),
        sa.Column("code", sa.String(length=20), nullable=False),
        _id("passenger_id"),
        sa.Column("created_at", ts(), nullable=False),
        sa.Column("expires_at", ts(), nullable=False),
        sa.Column("used_at", ts(), nullable=True),
        _id("booking_id", nullable=True),
        sa.PrimaryKeyConstraint("merchant_id", "code", name=op.f("pk_travel_consent_codes")),
        sa.ForeignKeyConstraint(
            ["merchant_id", "passenger_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_travel_consent_codes_merchant_id_members"),
        ),
    )
    op.create_index(
        op.f("ix_travel_consent_codes_merchant_id_passenger_id"),
        "travel_consent_codes",
        ["merchant_id", "passenger_id"],
    )
    op.create_table(
        "bookings",
        _id("merchant_id"),
        _id("id"),
        _id("member_id"),
        _id("program_id"),
        sa.Column("route", sa.String(length=7), nullable=False),
        sa.Column("cabin", sa.String(length=1), nullable=False),
        sa.Column("points_per_passenger", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        _id("journal_id"),
        _id("cancel_journal_id", nullable=True),
        sa.Column("created_at", ts(), nullable=False),
        sa.Column("cancelled_at", ts(), nullable=True),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_bookings")),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_bookings_merchant_id_members"),
        ),
    )
    op.create_index(
        op.f("ix_bookings_merchant_id_member_id_created_at"),
        "bookings",
        ["merchant_id", "member_id", "created_at"],
    )
    op.create_table(
        "booking_tickets",
        _id("merchant_id"),
        _id("id"),
        _id("booking_id"),
        sa.Column("seq", sa.Integer(), nullable=False),
        _id("passenger_id"),
        sa.Column("passenger_name", sa.String(length=200), nullable=False),
        sa.Column("code", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_booking_tickets")),
        sa.UniqueConstraint("merchant_id", "code", name=op.f("uq_booking_tickets_merchant_id_code")),
        sa.UniqueConstraint(
            "merchant_id",
            "booking_id",
            "passenger_id",
            name=op.f("uq_booking_tickets_merchant_id_booking_id_passenger_id"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id", "booking_id"],
            ["bookings.merchant_id", "bookings.id"],
            name=op.f("fk_booking_tickets_merchant_id_bookings"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id", "passenger_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_booking_tickets_merchant_id_members"),
        ),
    )
    op.create_index(
        op.f("ix_booking_tickets_merchant_id_passenger_id"),
        "booking_tickets",
        ["merchant_id", "passenger_id"],
    )


def downgrade() -> None:
    op.drop_table("booking_tickets")
    op.drop_table("bookings")
    op.drop_table("travel_consent_codes")
    op.drop_table("travel_consents")
