"""The tables of schema `approvals` as SQLAlchemy Core: a mirror of what the migrations create
(columns, keys, indexes, CHECK constraints), compared with the migrated database by
tests/service/test_schema_drift.py."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from zenthor.outbox import outbox_table

SCHEMA = "approvals"
# LISTEN/NOTIFY channel of this service; keys are `conv_…` (a conversation's pending set
# changed) and `apv_…` (one approval changed).
CHANGES = "approvals"
metadata = sa.MetaData(schema=SCHEMA)
TS = sa.DateTime(timezone=True)
UUID = pg.UUID(as_uuid=True)

tool_approvals = sa.Table(
    "tool_approvals",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("conversation_id", UUID, nullable=False),
    sa.Column("job_id", UUID, nullable=False),
    # The conversation's owner, copied at creation so ownership needs no cross-service read.
    sa.Column("owner_user_id", UUID),
    sa.Column("owner_contact_id", UUID),
    sa.Column("tool_name", sa.Text, nullable=False),
    sa.Column("tool_input", pg.JSONB),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS, nullable=False),
    sa.Column("resolved_at", TS),
    sa.CheckConstraint("status IN ('pending', 'approved', 'rejected', 'expired')", name="tool_approvals_status_check"),
    sa.CheckConstraint("channel IN ('web', 'whatsapp')", name="tool_approvals_channel_check"),
    sa.CheckConstraint("owner_user_id IS NOT NULL OR owner_contact_id IS NOT NULL", name="tool_approvals_owner_check"),
    # Final rows carry when they left PENDING; pending rows do not.
    sa.CheckConstraint("(status = 'pending') = (resolved_at IS NULL)", name="tool_approvals_resolved_at_check"),
    sa.Index("tool_approvals_job_idx", "job_id", "id"),
    sa.Index("tool_approvals_conversation_idx", "conversation_id", "id"),
    # The sweep's scan: only pending rows, by expiry.
    sa.Index("tool_approvals_pending_expiry_idx", "expires_at", postgresql_where=sa.text("status = 'pending'")),
)

# Migration 0002: approval.requested webhook events for delivery (docs/webhooks.md).
outbox = outbox_table(metadata, SCHEMA)
