"""delivery: webhook endpoints, deliveries and their attempts

Revision ID: 0004
Revises: 0003
"""

from alembic import op  # noqa: F401

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "delivery"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
