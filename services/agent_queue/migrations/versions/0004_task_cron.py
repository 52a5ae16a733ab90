"""agent_queue: cron expressions and time zones on scheduled tasks

A task runs on an interval or on a 5-field cron expression read in an IANA time zone, never
both (docs/architecture.md §8, "Scheduled tasks"). Existing rows keep their interval and get UTC.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "agent_queue"


def upgrade() -> None:
    op.add_column("scheduled_tasks", sa.Column("cron", sa.Text), schema=SCHEMA)
    op.add_column(
        "scheduled_tasks", sa.Column("time_zone", sa.Text, nullable=False, server_default="UTC"), schema=SCHEMA
    )
    op.alter_column("scheduled_tasks", "interval_ms", nullable=True, schema=SCHEMA)
    op.create_check_constraint(
        "scheduled_tasks_schedule_check",
        "scheduled_tasks",
        "(interval_ms IS NULL) <> (cron IS NULL)",
        schema=SCHEMA,
    )


def downgrade() -> None:
    # A cron task has no interval to fall back to: it cannot survive the downgrade.
    op.execute(f"DELETE FROM {SCHEMA}.scheduled_tasks WHERE cron IS NOT NULL")
    op.drop_constraint("scheduled_tasks_schedule_check", "scheduled_tasks", schema=SCHEMA)
    op.alter_column("scheduled_tasks", "interval_ms", nullable=False, schema=SCHEMA)
    op.drop_column("scheduled_tasks", "time_zone", schema=SCHEMA)
    op.drop_column("scheduled_tasks", "cron", schema=SCHEMA)
