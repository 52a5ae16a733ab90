"""identity: an index on the outbox's dead letters (zenthor.outbox.DEAD_LETTER_INDEX)

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from zenthor.outbox import DEAD_LETTER_INDEX, create_dead_letter_index

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "identity"


def upgrade() -> None:
    create_dead_letter_index(op.get_bind(), SCHEMA)


def downgrade() -> None:
    op.drop_index(DEAD_LETTER_INDEX, "outbox", schema=SCHEMA)
