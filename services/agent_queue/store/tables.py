"""The tables of schema `agent_queue` (the migrations create them; this mirrors them)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from zenthor.outbox import outbox_table

SCHEMA = "agent_queue"
metadata = sa.MetaData(schema=SCHEMA)
TS = sa.DateTime(timezone=True)
UUID = pg.UUID(as_uuid=True)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("message_id", UUID, nullable=False, unique=True),
    sa.Column("conversation_id", UUID, nullable=False),
    sa.Column("conversation_user_id", UUID),
    sa.Column("conversation_contact_id", UUID),
    sa.Column("agent_id", UUID),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("error_reason", sa.Text),
    sa.Column("error_message", sa.Text),
    sa.Column("attempt_count", sa.Integer, nullable=False),
    sa.Column("model_used", sa.Text),
    sa.Column("processor_id", sa.Text),
    sa.Column("locked_until", TS),
    sa.Column("started_at", TS),
    sa.Column("last_heartbeat_at", TS),
    sa.Column("finished_at", TS),
    sa.Column("next_attempt_at", TS),
    sa.Column("created_at", TS, nullable=False),
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("system_prompt", sa.Text, nullable=False),
    sa.Column("model", sa.Text),
    sa.Column("fallback_model", sa.Text),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("tool_policy", pg.JSONB(none_as_null=True)),
    sa.Column("created_at", TS, nullable=False),
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
)

scheduled_tasks = sa.Table(
    "scheduled_tasks",
    metadata,
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
)

outbox = outbox_table(metadata, SCHEMA)
