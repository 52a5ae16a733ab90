"""messages: a placeholder remembers the job it answers (job_id), so agent_queue can fail it

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "messages"


def upgrade() -> None:
    # The agent job a streaming placeholder answers (agent_queue's id, no foreign key across
    # services): when the job is requeued or fails for good, its open placeholders are failed
    # (FailJobPlaceholders, docs/hardening.md #40). Absent for every other message.
    op.add_column("messages", sa.Column("job_id", pg.UUID(as_uuid=True)), schema=SCHEMA)
    op.create_index("messages_job_idx", "messages", ["job_id"], schema=SCHEMA,
                    postgresql_where=sa.text("job_id IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("messages_job_idx", "messages", schema=SCHEMA)
    op.drop_column("messages", "job_id", schema=SCHEMA)
