"""agent_queue: cancelled jobs and cancellation requests

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "agent_queue"
TS = sa.DateTime(timezone=True)

# A cancelled job is finished like a completed or failed one: it leaves the head, so the hand-over
# trigger of migration 0002 (which fires on any head that clears is_head, whatever the new status)
# gives the conversation to its next pending job, and an insert of a cancelled row (a job
# cancelled before its EnqueueJob arrived) never takes the head (jobs_take_head heads only
# unfinished rows). No trigger changes.


def upgrade() -> None:
    # When the cancellation was asked for: a PROCESSING job with it set has a holder that must stop
    # (docs/double-texting.md); every CANCELLED job has it.
    op.add_column("jobs", sa.Column("cancel_requested_at", TS), schema=SCHEMA)
    # The cancellation also deletes the job's replies (double-texting `rollback`).
    op.add_column(
        "jobs",
        sa.Column("cancel_discards_reply", sa.Boolean, nullable=False, server_default=sa.false()),
        schema=SCHEMA,
    )
    op.drop_constraint("jobs_status_check", "jobs", schema=SCHEMA)
    # Every cancelled job records when its cancellation was asked for.
    op.create_check_constraint(
        "jobs_status_check",
        "jobs",
        "status IN ('pending', 'processing', 'completed', 'failed', 'waiting_retry', 'cancelled')"
        " AND (status <> 'cancelled' OR cancel_requested_at IS NOT NULL)",
        schema=SCHEMA,
    )
    # Retention covers cancelled jobs too (by finish time, docs/hardening.md #20).
    op.drop_index("jobs_finished_idx", "jobs", schema=SCHEMA)
    op.create_index(
        "jobs_finished_idx", "jobs", ["finished_at"], schema=SCHEMA,
        postgresql_where=sa.text("status IN ('completed', 'failed', 'cancelled')"),
    )
    # WatchPendingJobs' snapshot: the running jobs whose holders must stop (a handful at most).
    op.create_index(
        "jobs_cancel_requested_idx", "jobs", ["processor_id"], schema=SCHEMA,
        postgresql_where=sa.text("status = 'processing' AND cancel_requested_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("jobs_cancel_requested_idx", "jobs", schema=SCHEMA)
    op.drop_index("jobs_finished_idx", "jobs", schema=SCHEMA)
    op.execute(f"DELETE FROM {SCHEMA}.jobs WHERE status = 'cancelled'")
    op.create_index(
        "jobs_finished_idx", "jobs", ["finished_at"], schema=SCHEMA,
        postgresql_where=sa.text("status IN ('completed', 'failed')"),
    )
    op.drop_constraint("jobs_status_check", "jobs", schema=SCHEMA)
    op.create_check_constraint(
        "jobs_status_check",
        "jobs",
        "status IN ('pending', 'processing', 'completed', 'failed', 'waiting_retry')",
        schema=SCHEMA,
    )
    op.drop_column("jobs", "cancel_discards_reply", schema=SCHEMA)
    op.drop_column("jobs", "cancel_requested_at", schema=SCHEMA)
