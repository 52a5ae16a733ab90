"""The tables of schema `agent_queue`: the migrations create them, this mirrors them (columns,
constraints and indexes, by name; tests/service/test_schema_drift.py compares the two)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from zenthor.outbox import outbox_table

SCHEMA = "agent_queue"
# LISTEN/NOTIFY channels, keyed by conversation id (hex). The hand-over trigger (migration 0006)
# sends on them by name too, listing a statement's conversations in one payload (multi-key).
# A conversation became active or idle (WatchConversationProcessing).
JOBS_CHANNEL = "agent_queue_jobs"
# A job was queued or became claimable (WatchPendingJobs).
PENDING_CHANNEL = "agent_queue_pending"
metadata = sa.MetaData(schema=SCHEMA)
TS = sa.DateTime(timezone=True)
UUID = pg.UUID(as_uuid=True)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("message_id", UUID, nullable=False),
    sa.Column("conversation_id", UUID, nullable=False),
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
    # The conversation's head: its one job that may be claimed, be processing or wait for its
    # retry (the oldest unfinished one). Set on insert (migration 0002's trigger) and handed over to
    # the next pending job by migration 0006's when a statement finishing the head clears it.
    sa.Column("is_head", sa.Boolean, nullable=False, server_default=sa.false()),
    # When its cancellation was asked for (migration 0003): a processing job with it set has a
    # holder that must stop; every cancelled job has it.
    sa.Column("cancel_requested_at", TS),
    # The cancellation also deletes the job's replies (double-texting `rollback`).
    sa.Column("cancel_discards_reply", sa.Boolean, nullable=False, server_default=sa.false()),
    # EnqueueJob's idempotency key: the outbox may deliver twice.
    sa.UniqueConstraint("message_id", name="jobs_message_id_key"),
    sa.CheckConstraint(
        "status IN ('pending', 'processing', 'completed', 'failed', 'waiting_retry', 'cancelled')"
        # every cancelled job records when its cancellation was asked for
        " AND (status <> 'cancelled' OR cancel_requested_at IS NOT NULL)",
        name="jobs_status_check",
    ),
    # At most one PROCESSING job per conversation, whatever the claim code does.
    sa.Index(
        "jobs_one_processing_per_conversation",
        "conversation_id",
        unique=True,
        postgresql_where=sa.text("status = 'processing'"),
    ),
    # Claim order: oldest pending first (ids are UUIDv7, so id order is creation order).
    sa.Index("jobs_pending_idx", "id", postgresql_where=sa.text("status = 'pending'")),
    sa.Index("jobs_processing_lease_idx", "locked_until", postgresql_where=sa.text("status = 'processing'")),
    sa.Index("jobs_conversation_status_idx", "conversation_id", "status"),
    sa.Index(
        "jobs_finished_idx", "finished_at", postgresql_where=sa.text("status IN ('completed', 'failed', 'cancelled')")
    ),
    sa.Index("jobs_waiting_retry_idx", "next_attempt_at", postgresql_where=sa.text("status = 'waiting_retry'")),
    # At most one head per conversation.
    sa.Index("jobs_head_key", "conversation_id", unique=True, postgresql_where=sa.text("is_head")),
    # The claim scan: pending heads, oldest first; at most one row per conversation.
    sa.Index("jobs_claimable_idx", "id", postgresql_where=sa.text("status = 'pending' AND is_head")),
    # The hand-over: a conversation's oldest pending job.
    sa.Index("jobs_conversation_pending_idx", "conversation_id", "id", postgresql_where=sa.text("status = 'pending'")),
    # WatchPendingJobs: the running jobs whose holders must stop.
    sa.Index(
        "jobs_cancel_requested_idx",
        "processor_id",
        postgresql_where=sa.text("status = 'processing' AND cancel_requested_at IS NOT NULL"),
    ),
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("system_prompt", sa.Text, nullable=False),
    sa.Column("model", sa.Text),
    sa.Column("fallback_model", sa.Text),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("tool_policy", pg.JSONB(none_as_null=True)),
    sa.Column("created_at", TS, nullable=False),
    sa.UniqueConstraint("name", name="agents_name_key"),  # docs/hardening.md #24
)

skills = sa.Table(
    "skills",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("owner_user_id", UUID),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("config", pg.JSONB(none_as_null=True)),
    sa.Column("created_at", TS, nullable=False),
    # One skill per name per owner, case-insensitively (docs/hardening.md #24).
    sa.Index(
        "skills_owner_name_key",
        "owner_user_id",
        sa.text("lower(name)"),
        unique=True,
        postgresql_where=sa.text("owner_user_id IS NOT NULL"),
    ),
    sa.Index("skills_unowned_idx", "id", postgresql_where=sa.text("owner_user_id IS NULL")),
)

scheduled_tasks = sa.Table(
    "scheduled_tasks",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text),
    # An interval task has interval_ms, a cron task cron (migration 0004); never both.
    sa.Column("interval_ms", sa.BigInteger),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("last_run_at", TS),
    sa.Column("next_run_at", TS),
    sa.Column("conversation_id", UUID),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("cron", sa.Text),
    sa.Column("time_zone", sa.Text, nullable=False, server_default="UTC"),
    sa.CheckConstraint("(interval_ms IS NULL) <> (cron IS NULL)", name="scheduled_tasks_schedule_check"),
    sa.Index("scheduled_tasks_due_idx", "next_run_at", postgresql_where=sa.text("enabled AND next_run_at IS NOT NULL")),
)

# The users whose job.completed / job.failed events are written: delivery registers each owner
# of an endpoint for them (AddJobEventListeners, store/job_events.py); migration 0007.
job_event_listeners = sa.Table(
    "job_event_listeners",
    metadata,
    sa.Column("user_id", UUID, primary_key=True),
    sa.Column("created_at", TS, nullable=False),
)

outbox = outbox_table(metadata, SCHEMA)
