"""agent_queue: cancelled jobs and cancellation requests

Revision ID: 0003
Revises: 0002
"""

from alembic import op  # noqa: F401

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "agent_queue"


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
