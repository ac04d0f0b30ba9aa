"""one head again: merge the feature branches of the schema

Revision ID: 0009_merge
Revises: 0003_integrations, 0003_web, 0006_tickets, 0007_bookings, 0008_fulfilment
"""

from __future__ import annotations

revision = "0009_merge"
down_revision = ("0003_integrations", "0003_web", "0006_tickets", "0007_bookings", "0008_fulfilment")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
