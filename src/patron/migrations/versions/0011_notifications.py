"""notifications: member email log, email preferences, unsubscribe signing keys

Revision ID: 0011_notifications
Revises: 0010_referral_review
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0011_notifications"
down_revision = "0010_referral_review"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    op.create_table(
        "notifications",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("program_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("as_of", ts(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", ts(), nullable=False),
        sa.Column("updated_at", ts(), nullable=False),
        sa.Column("sent_at", ts(), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_notifications_merchant_id_members"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_notifications")),
        sa.UniqueConstraint(
            "merchant_id",
            "member_id",
            "kind",
            "key",
            name=op.f("uq_notifications_merchant_id_member_id_kind_key"),
        ),
    )
    op.create_index(
        op.f("ix_notifications_merchant_id_status_created_at"),
        "notifications",
        ["merchant_id", "status", "created_at"],
    )
    op.create_table(
        "notification_preferences",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("member_id", sa.String(length=40), nullable=False),
        sa.Column("unsubscribed_at", ts(), nullable=True),
        sa.Column("off", sa.JSON(), nullable=False),
        sa.Column("updated_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id", "member_id"],
            ["members.merchant_id", "members.id"],
            name=op.f("fk_notification_preferences_merchant_id_members"),
        ),
        sa.PrimaryKeyConstraint("merchant_id", "member_id", name=op.f("pk_notification_preferences")),
    )
    op.create_table(
        "notification_keys",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("secret", sa.String(length=64), nullable=False),
        sa.Column("created_at", ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_notification_keys_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("merchant_id", name=op.f("pk_notification_keys")),
    )


def downgrade() -> None:
    op.drop_table("notification_keys")
    op.drop_table("notification_preferences")
    op.drop_index(op.f("ix_notifications_merchant_id_status_created_at"), table_name="notifications")
    op.drop_table("notifications")
