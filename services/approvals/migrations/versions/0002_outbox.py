"""approvals: outbox (approval.requested webhook events, docs/webhooks.md)

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from zenthor.outbox import create_outbox_table

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "approvals"


def upgrade() -> None:
    # The kit's one outbox shape (zenthor.outbox), as every other service's first migration has it.
    create_outbox_table(op.get_bind(), SCHEMA)


def downgrade() -> None:
    op.drop_table("outbox", schema=SCHEMA)
