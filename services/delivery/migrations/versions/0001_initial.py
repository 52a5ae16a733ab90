"""delivery: outbound_messages, whatsapp_accounts, whatsapp_leases, whatsapp_session, outbox

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

SCHEMA = "delivery"
TS = sa.DateTime(timezone=True)
UNFINISHED = "status IN ('pending', 'processing', 'waiting_retry')"


def upgrade() -> None:
    op.create_table(
        "outbound_messages",
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("conversation_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("message_id", pg.UUID(as_uuid=True), nullable=False),
        sa.Column("recipient", sa.Text),
        sa.Column("recipient_key", sa.Text, nullable=False),
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
            "status IN ('pending', 'processing', 'waiting_retry', 'sent', 'failed')",
            name="outbound_messages_status_check",
        ),
        # A claimed row always names its holder and its lease end; no other row does (docs/hardening.md #16:
        # no `processing` row without a lease that could never be reclaimed).
        sa.CheckConstraint(
            "(status = 'processing') = (processor_id IS NOT NULL AND locked_until IS NOT NULL)",
            name="outbound_messages_lease_check",
        ),
        sa.CheckConstraint("attempt_count BETWEEN 0 AND 5", name="outbound_messages_attempts_check"),
        schema=SCHEMA,
    )
    # Claim scan: an account's pending rows in FIFO order.
    op.create_index("outbound_messages_claim_idx", "outbound_messages", ["account_id", "channel", "created_at", "id"],
                    schema=SCHEMA, postgresql_where=sa.text("status = 'pending'"))
    # Per-recipient order check: is there an older unfinished row for this recipient?
    op.create_index("outbound_messages_recipient_idx", "outbound_messages",
                    ["account_id", "channel", "recipient_key", "created_at", "id"],
                    schema=SCHEMA, postgresql_where=sa.text(UNFINISHED))
    # Expired-lease reclaim (inline per account, and the sweep across accounts).
    op.create_index("outbound_messages_lease_idx", "outbound_messages", ["locked_until"],
                    schema=SCHEMA, postgresql_where=sa.text("status = 'processing'"))
    op.create_index("outbound_messages_conversation_idx", "outbound_messages", ["conversation_id", "id"],
                    schema=SCHEMA, postgresql_where=sa.text(UNFINISHED))
    op.create_table(
        "whatsapp_accounts",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("phone", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("meta", pg.JSONB),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "whatsapp_leases",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("owner_id", sa.Text, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("heartbeat_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("whatsapp_leases_owner_idx", "whatsapp_leases", ["owner_id", "account_id"], schema=SCHEMA)
    op.create_table(
        "whatsapp_session",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        schema=SCHEMA,
    )
    create_outbox_table(op.get_bind(), SCHEMA)


def downgrade() -> None:
    for table in ("outbox", "whatsapp_session", "whatsapp_leases", "whatsapp_accounts", "outbound_messages"):
        op.drop_table(table, schema=SCHEMA)
