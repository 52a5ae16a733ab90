"""agent_queue: jobs, agents, skills, scheduled_tasks, outbox

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

from zenthor.outbox import create_outbox_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "agent_queue"
TS = sa.DateTime(timezone=True)
UUID = pg.UUID(as_uuid=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("message_id", UUID, nullable=False),
        sa.Column("conversation_id", UUID, nullable=False),
        # Owner ids of the conversation, copied at enqueue: user-mode ownership checks need no
        # call to messages.
        sa.Column("conversation_user_id", UUID),
        sa.Column("conversation_contact_id", UUID),
        sa.Column("agent_id", UUID),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("error_reason", sa.Text),
        sa.Column("error_message", sa.Text),
        sa.Column("attempt_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("model_used", sa.Text),
        sa.Column("processor_id", sa.Text),
        sa.Column("locked_until", TS),
        sa.Column("started_at", TS),
        sa.Column("last_heartbeat_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("next_attempt_at", TS),
        sa.Column("created_at", TS, nullable=False),
        # EnqueueJob's idempotency key: the outbox may deliver twice.
        sa.UniqueConstraint("message_id", name="jobs_message_id_key"),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed', 'waiting_retry')",
            name="jobs_status_check",
        ),
        schema=SCHEMA,
    )
    # At most one PROCESSING job per conversation, whatever the claim code does.
    op.create_index("jobs_one_processing_per_conversation", "jobs", ["conversation_id"], unique=True,
                    schema=SCHEMA, postgresql_where=sa.text("status = 'processing'"))
    # Claim order: oldest pending first (ids are UUIDv7, so id order is creation order).
    op.create_index("jobs_pending_idx", "jobs", ["id"], schema=SCHEMA,
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index("jobs_processing_lease_idx", "jobs", ["locked_until"], schema=SCHEMA,
                    postgresql_where=sa.text("status = 'processing'"))
    op.create_index("jobs_conversation_status_idx", "jobs", ["conversation_id", "status"], schema=SCHEMA)
    op.create_index("jobs_finished_idx", "jobs", ["finished_at"], schema=SCHEMA,
                    postgresql_where=sa.text("status IN ('completed', 'failed')"))
    op.create_index("jobs_waiting_retry_idx", "jobs", ["next_attempt_at"], schema=SCHEMA,
                    postgresql_where=sa.text("status = 'waiting_retry'"))

    op.create_table(
        "agents",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("system_prompt", sa.Text, nullable=False),
        sa.Column("model", sa.Text),
        sa.Column("fallback_model", sa.Text),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("tool_policy", pg.JSONB),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("name", name="agents_name_key"),  # docs/hardening.md #24
        schema=SCHEMA,
    )
    op.create_table(
        "skills",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("owner_user_id", UUID),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("config", pg.JSONB),
        sa.Column("created_at", TS, nullable=False),
        schema=SCHEMA,
    )
    # One skill per name per owner, case-insensitively, as seeding matches (docs/hardening.md #24).
    op.create_index("skills_owner_name_key", "skills", ["owner_user_id", sa.text("lower(name)")], unique=True,
                    schema=SCHEMA, postgresql_where=sa.text("owner_user_id IS NOT NULL"))
    op.create_index("skills_unowned_idx", "skills", ["id"], schema=SCHEMA,
                    postgresql_where=sa.text("owner_user_id IS NULL"))

    op.create_table(
        "scheduled_tasks",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("interval_ms", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("last_run_at", TS),
        sa.Column("next_run_at", TS),
        sa.Column("conversation_id", UUID),
        sa.Column("created_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("scheduled_tasks_due_idx", "scheduled_tasks", ["next_run_at"], schema=SCHEMA,
                    postgresql_where=sa.text("enabled AND next_run_at IS NOT NULL"))

    create_outbox_table(op.get_bind(), SCHEMA)


def downgrade() -> None:
    for table in ("outbox", "scheduled_tasks", "skills", "agents", "jobs"):
        op.drop_table(table, schema=SCHEMA)
