"""fulfilment status of physical gifts

Revision ID: 0008_fulfilment
Revises: 0005_referrals
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_fulfilment"
down_revision = "0005_referrals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("redemptions", sa.Column("fulfilment_status", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("redemptions") as batch:
        batch.drop_column("fulfilment_status")
