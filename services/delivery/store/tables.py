"""The delivery schema's tables as SQLAlchemy Core (the migration creates them)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from zenthor.outbox import outbox_table

SCHEMA = "delivery"
# LISTEN/NOTIFY channel: key = the account id whose outbound rows changed (WatchOutbound).
OUTBOUND_CHANGES = "delivery_outbound"
metadata = sa.MetaData(schema=SCHEMA)
TS = sa.DateTime(timezone=True)

outbound_messages = sa.Table(
    "outbound_messages",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("account_id", sa.Text, nullable=False),  # finding 10: always set
    sa.Column("conversation_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("message_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("recipient", sa.Text),
    # What per-recipient FIFO order is kept by (domain.outbound docstring).
    sa.Column("recipient_key", sa.Text, nullable=False),
    # The one message of its recipient that may be claimed, in flight or waiting for a retry.
    sa.Column("is_head", sa.Boolean, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("metadata", pg.JSONB),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("processor_id", sa.Text),
    sa.Column("locked_until", TS),
    sa.Column("attempt_count", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("next_attempt_at", TS),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.UniqueConstraint("message_id", "channel", name="outbound_messages_message_channel_key"),
)

whatsapp_accounts = sa.Table(
    "whatsapp_accounts",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),  # finding 24: unique
    sa.Column("phone", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("meta", pg.JSONB),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

whatsapp_leases = sa.Table(
    "whatsapp_leases",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),  # finding 24: one lease per account
    sa.Column("owner_id", sa.Text, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("heartbeat_at", TS, nullable=False),
)

whatsapp_session = sa.Table(
    "whatsapp_session",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),  # finding 24: unique
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

outbox = outbox_table(metadata, SCHEMA)
