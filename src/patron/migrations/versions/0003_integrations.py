"""inbound integrations and their webhook delivery inbox

Revision ID: 0003_integrations
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import patron.storage.tables

revision = "0003_integrations"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = patron.storage.tables.UTCDateTime
    op.create_table(
        "integrations",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("program_id", sa.String(length=40), nullable=False),
        sa.Column("secret", sa.String(length=500), nullable=False),
        sa.Column("created_at", ts(), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", "id", name=op.f("pk_integrations")),
        sa.UniqueConstraint("id", name=op.f("uq_integrations_id")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("merchant_id", sa.String(length=40), nullable=False),
        sa.Column("integration_id", sa.String(length=40), nullable=False),
        sa.Column("delivery_id", sa.String(length=200), nullable=False),
        sa.Column("topic", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("outcome", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("received_at", ts(), nullable=False),
        sa.Column("updated_at", ts(), nullable=False),
        sa.PrimaryKeyConstraint(
            "merchant_id", "integration_id", "delivery_id", name=op.f("pk_webhook_deliveries")
        ),
    )
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.create_index(
            batch.f("ix_webhook_deliveries_merchant_id_integration_id_received_at"),
            ["merchant_id", "integration_id", "received_at"],
        )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("integrations")
