"""deliveries by event: the retention job and the outbox's foreign key look them up by event

Revision ID: 0014_deliveries_by_event
Revises: 0013_member_segments
"""

from __future__ import annotations

from alembic import op

revision = "0014_deliveries_by_event"
down_revision = "0013_member_segments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_outbound_deliveries_merchant_id_event_id",
        "outbound_deliveries",
        ["merchant_id", "event_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_outbound_deliveries_merchant_id_event_id", table_name="outbound_deliveries")
