"""The tables of schema `delivery` as SQLAlchemy Core: a mirror of what the migrations create
(columns, keys, indexes, CHECK constraints), compared with the migrated database by
tests/service/test_schema_drift.py."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from zenthor.outbox import outbox_table

SCHEMA = "delivery"
# LISTEN/NOTIFY channel: key = the account id whose outbound rows changed (WatchOutbound).
OUTBOUND_CHANGES = "delivery_outbound"
metadata = sa.MetaData(schema=SCHEMA)
TS = sa.DateTime(timezone=True)
UNFINISHED = sa.text("status IN ('pending', 'processing', 'waiting_retry')")

outbound_messages = sa.Table(
    "outbound_messages",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("account_id", sa.Text, nullable=False),  # docs/hardening.md #10: always set
    sa.Column("conversation_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("message_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("recipient", sa.Text),
    # What per-recipient FIFO order is kept by (domain.outbound docstring).
    sa.Column("recipient_key", sa.Text, nullable=False),
    # The one message of its recipient that may be claimed, in flight or waiting for a retry.
    sa.Column("is_head", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("metadata", pg.JSONB),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("processor_id", sa.Text),
    sa.Column("locked_until", TS),
    sa.Column("attempt_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text),
    sa.Column("next_attempt_at", TS),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    # Idempotent enqueue: outbox re-drives never queue a message twice.
    sa.UniqueConstraint("message_id", "channel", name="outbound_messages_message_channel_key"),
    sa.CheckConstraint("channel IN ('web', 'whatsapp')", name="outbound_messages_channel_check"),
    sa.CheckConstraint(
        "status IN ('pending', 'processing', 'waiting_retry', 'sent', 'failed')", name="outbound_messages_status_check"
    ),
    # A claimed row always names its holder and its lease end; no other row does.
    sa.CheckConstraint(
        "(status = 'processing') = (processor_id IS NOT NULL AND locked_until IS NOT NULL)",
        name="outbound_messages_lease_check",
    ),
    sa.CheckConstraint("attempt_count BETWEEN 0 AND 5", name="outbound_messages_attempts_check"),
    sa.CheckConstraint(
        "NOT is_head OR status IN ('pending', 'processing', 'waiting_retry')", name="outbound_messages_head_check"
    ),
    # Claim scan and claimable count: an account's pending heads in FIFO order.
    sa.Index(
        "outbound_messages_claim_idx",
        "account_id",
        "channel",
        "created_at",
        "id",
        postgresql_where=sa.text("status = 'pending' AND is_head"),
    ),
    # Per-recipient order: is there an older unfinished row for this recipient?
    sa.Index(
        "outbound_messages_recipient_idx",
        "account_id",
        "channel",
        "recipient_key",
        "created_at",
        "id",
        postgresql_where=UNFINISHED,
    ),
    # Expired-lease reclaim (inline per account, and the sweep across accounts).
    sa.Index("outbound_messages_lease_idx", "locked_until", postgresql_where=sa.text("status = 'processing'")),
    sa.Index("outbound_messages_conversation_idx", "conversation_id", "id", postgresql_where=UNFINISHED),
    # At most one head per recipient.
    sa.Index(
        "outbound_messages_head_key",
        "account_id",
        "channel",
        "recipient_key",
        unique=True,
        postgresql_where=sa.text("is_head"),
    ),
)

whatsapp_accounts = sa.Table(
    "whatsapp_accounts",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),  # docs/hardening.md #24: unique
    sa.Column("phone", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("meta", pg.JSONB),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

whatsapp_leases = sa.Table(
    "whatsapp_leases",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),  # docs/hardening.md #24: one lease per account
    sa.Column("owner_id", sa.Text, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("heartbeat_at", TS, nullable=False),
    # ListOwnedAccounts: an owner's accounts in key order.
    sa.Index("whatsapp_leases_owner_idx", "owner_id", "account_id"),
)

whatsapp_session = sa.Table(
    "whatsapp_session",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),  # docs/hardening.md #24: unique
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

# --- completion webhooks (migration 0004, docs/webhooks.md) ---

EVENT_TYPES = "('job.completed', 'job.failed', 'approval.requested', 'message.created')"
EVENT_TYPE_ARRAY = "ARRAY['job.completed', 'job.failed', 'approval.requested', 'message.created']::text[]"

webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("user_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event_types", pg.ARRAY(sa.Text), nullable=False),
    # The svix signing secret as issued (signing needs it in clear; see the migration).
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.CheckConstraint(
        f"cardinality(event_types) BETWEEN 1 AND 4 AND event_types <@ {EVENT_TYPE_ARRAY}",
        name="webhook_endpoints_event_types_check",
    ),
    sa.Index("webhook_endpoints_user_idx", "user_id", "id"),
)

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    # The emitter's idempotency key (`job.completed:job_…`).
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("owner_user_id", pg.UUID(as_uuid=True)),
    sa.Column("owner_contact_id", pg.UUID(as_uuid=True)),
    # The exact JSON every endpoint gets, on every attempt and redelivery.
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("occurred_at", TS, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.CheckConstraint(f"type IN {EVENT_TYPES}", name="webhook_events_type_check"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("event_id", sa.Text, sa.ForeignKey(f"{SCHEMA}.webhook_events.id", ondelete="CASCADE"), nullable=False),
    sa.Column(
        "endpoint_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey(f"{SCHEMA}.webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("status", sa.Text, nullable=False),
    # 1 for the first attempt series, one more per redelivery.
    sa.Column("series", sa.Integer, nullable=False, server_default="1"),
    sa.Column("delivered_at", TS),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.UniqueConstraint("event_id", "endpoint_id", name="webhook_deliveries_event_endpoint_key"),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="webhook_deliveries_status_check"),
    sa.CheckConstraint("(status = 'delivered') = (delivered_at IS NOT NULL)", name="webhook_deliveries_delivered_check"),
    sa.CheckConstraint("series >= 1", name="webhook_deliveries_series_check"),
    sa.Index("webhook_deliveries_endpoint_idx", "endpoint_id", "id"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column(
        "delivery_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey(f"{SCHEMA}.webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("series", sa.Integer, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("attempted_at", TS, nullable=False),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("succeeded", sa.Boolean, nullable=False),
    sa.PrimaryKeyConstraint("delivery_id", "series", "attempt", name="webhook_attempts_pkey"),
    sa.CheckConstraint("status_code BETWEEN 100 AND 599", name="webhook_attempts_status_code_check"),
    sa.CheckConstraint("duration_ms >= 0", name="webhook_attempts_duration_check"),
)

outbox = outbox_table(metadata, SCHEMA)
