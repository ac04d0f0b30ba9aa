"""merge the feature branches; tier assignments say whether the level is held after they end

Revision ID: 0012_merge_plan_floors
Revises: 0011_airline_punch, 0011_households, 0011_memberships, 0011_notifications, 0011_outbox,
0011_surveys_cases
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_merge_plan_floors"
down_revision = (
    "0011_airline_punch",
    "0011_households",
    "0011_memberships",
    "0011_notifications",
    "0011_outbox",
    "0011_surveys_cases",
)
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tier_assignments") as batch:
        batch.add_column(sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.true()))
    # a plan's tier lasts while the membership does: the assignments memberships made are floors
    op.execute("UPDATE tier_assignments SET held = false WHERE reason LIKE 'membership %'")


def downgrade() -> None:
    with op.batch_alter_table("tier_assignments") as batch:
        batch.drop_column("held")
