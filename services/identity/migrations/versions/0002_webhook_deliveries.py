"""identity: webhook_deliveries, the svix-ids of processed Clerk deliveries

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "identity"


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("svix_id", sa.Text, primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    # The sweep deletes by age.
    op.create_index("webhook_deliveries_received_at_idx", "webhook_deliveries", ["received_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("webhook_deliveries", schema=SCHEMA)
