"""outbox: business events, outbound webhook endpoints, deliveries and their attempts

Revision ID: 0011_outbox
Revises: 0010_referral_review
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0011_outbox"
down_revision = "0010_referral_review"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    op.create_table(
        "outbox_events",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=True),
        sa.Column("stream", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", ts(), nullable=False),
        sa.Column("created_at", ts(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("fanned_out_at", ts(), nullable=True),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_outbox_events")),
        sa.UniqueConstraint(
            "merchant_id", "stream", "seq", name=op.f("uq_outbox_events_merchant_id_stream_seq")
        ),
    )
    op.create_index(
        "ix_outbox_events_merchant_id_stream_seq_unfanned",
        "outbox_events",
        ["merchant_id", "stream", "seq"],
        postgresql_where=sa.text("fanned_out_at IS NULL"),
        sqlite_where=sa.text("fanned_out_at IS NULL"),
    )
    op.create_index(
        op.f("ix_outbox_events_merchant_id_member_id_id"), "outbox_events", ["merchant_id", "member_id", "id"]
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("failing_since", ts(), nullable=True),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("disabled_at", ts(), nullable=True),
        sa.Column("created_at", ts(), nullable=False),
        sa.Column("updated_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_webhook_endpoints_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_table(
        "outbound_deliveries",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("replay", sa.Integer(), nullable=False),
        sa.Column("stream", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", ts(), nullable=False),
        sa.Column("created_at", ts(), nullable=False),
        sa.Column("delivered_at", ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id", "endpoint_id"],
            ["webhook_endpoints.merchant_id", "webhook_endpoints.id"],
            name=op.f("fk_outbound_deliveries_merchant_id_webhook_endpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_id", "event_id"],
            ["outbox_events.merchant_id", "outbox_events.id"],
            name=op.f("fk_outbound_deliveries_merchant_id_outbox_events"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_outbound_deliveries")),
        sa.UniqueConstraint(
            "merchant_id",
            "endpoint_id",
            "event_id",
            "replay",
            name=op.f("uq_outbound_deliveries_merchant_id_endpoint_id_event_id_replay"),
        ),
    )
    op.create_index(
        op.f("ix_outbound_deliveries_merchant_id_endpoint_id_stream_seq"),
        "outbound_deliveries",
        ["merchant_id", "endpoint_id", "stream", "seq"],
    )
    op.create_index(
        "ix_outbound_deliveries_merchant_id_next_attempt_at_pending",
        "outbound_deliveries",
        ["merchant_id", "next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "outbound_attempts",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("delivery_id", sa.String(length=40), nullable=False),
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", ts(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id", "delivery_id"],
            ["outbound_deliveries.merchant_id", "outbound_deliveries.id"],
            name=op.f("fk_outbound_attempts_merchant_id_outbound_deliveries"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_outbound_attempts")),
    )
    op.create_index(
        op.f("ix_outbound_attempts_merchant_id_delivery_id"),
        "outbound_attempts",
        ["merchant_id", "delivery_id"],
    )


def downgrade() -> None:
    op.drop_table("outbound_attempts")
    op.drop_table("outbound_deliveries")
    op.drop_table("webhook_endpoints")
    op.drop_table("outbox_events")
