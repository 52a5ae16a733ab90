"""messages: conversations, messages, inbound_dedupe, memories (pgvector), outbox

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql as pg

from zenthor.outbox import create_outbox_table

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "messages"
TS = sa.DateTime(timezone=True)
UUID = pg.UUID(as_uuid=True)


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("user_id", UUID),
        sa.Column("contact_id", UUID),
        sa.Column("agent_id", UUID),
        sa.Column("title", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        # Change counter for WatchConversation positions (see store/conversations.py).
        sa.Column("revision", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("meta_revision", sa.BigInteger, nullable=False, server_default="0"),
        sa.CheckConstraint("channel IN ('web', 'whatsapp')", name="conversations_channel_check"),
        sa.CheckConstraint("status IN ('active', 'archived')", name="conversations_status_check"),
        # Web conversations belong to a user, WhatsApp ones to a contact (and never to a user).
        sa.CheckConstraint(
            "(channel = 'web' AND user_id IS NOT NULL) OR (channel = 'whatsapp' AND contact_id IS NOT NULL AND user_id IS NULL)",
            name="conversations_owner_check",
        ),
        sa.CheckConstraint("channel = 'web' OR status = 'active'", name="conversations_whatsapp_active_check"),
        schema=SCHEMA,
    )
    op.create_index("conversations_user_idx", "conversations", ["user_id", "id"], schema=SCHEMA)
    op.create_index("conversations_contact_idx", "conversations", ["contact_id", "id"], schema=SCHEMA)
    # WhatsApp conversations are only made by get-or-create and never archived: one per contact.
    op.create_index("conversations_whatsapp_contact_key", "conversations", ["contact_id"], unique=True, schema=SCHEMA,
                    postgresql_where=sa.text("channel = 'whatsapp'"))

    op.create_table(
        "messages",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("conversation_id", UUID, sa.ForeignKey(f"{SCHEMA}.conversations.id"), nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("tool_calls", pg.JSONB),
        sa.Column("streaming", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("role IN ('user', 'assistant', 'system')", name="messages_role_check"),
        sa.CheckConstraint("channel IN ('web', 'whatsapp')", name="messages_channel_check"),
        sa.CheckConstraint("status IN ('pending', 'sent', 'delivered', 'failed')", name="messages_status_check"),
        # Only assistant placeholders ever stream (docs/hardening.md #28).
        sa.CheckConstraint("NOT streaming OR role = 'assistant'", name="messages_streaming_role_check"),
        schema=SCHEMA,
    )
    op.create_index("messages_conversation_idx", "messages", ["conversation_id", "id"], schema=SCHEMA)
    op.create_index("messages_conversation_revision_idx", "messages", ["conversation_id", "revision"], schema=SCHEMA)
    op.create_index("messages_idempotency_key", "messages", ["conversation_id", "idempotency_key"], unique=True,
                    schema=SCHEMA, postgresql_where=sa.text("idempotency_key IS NOT NULL"))

    op.create_table(
        "inbound_dedupe",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("account_id", sa.Text),
        sa.Column("channel_message_id", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("channel IN ('web', 'whatsapp')", name="inbound_dedupe_channel_check"),
        schema=SCHEMA,
    )
    # The key includes the account; a missing account is one value (docs/hardening.md #24, #35).
    op.execute(
        f"CREATE UNIQUE INDEX inbound_dedupe_key ON {SCHEMA}.inbound_dedupe"
        " (channel, account_id, channel_message_id) NULLS NOT DISTINCT"
    )
    op.create_index("inbound_dedupe_created_idx", "inbound_dedupe", ["created_at"], schema=SCHEMA)

    op.create_table(
        "memories",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("conversation_id", UUID),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("embedding", Vector(1536), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("source IN ('conversation', 'manual')", name="memories_source_check"),
        schema=SCHEMA,
    )
    op.create_index("memories_conversation_idx", "memories", ["conversation_id", "id"], schema=SCHEMA)
    op.create_index("memories_embedding_hnsw", "memories", ["embedding"], schema=SCHEMA,
                    postgresql_using="hnsw", postgresql_ops={"embedding": "vector_cosine_ops"})

    create_outbox_table(op.get_bind(), SCHEMA)


def downgrade() -> None:
    for table in ("outbox", "memories", "inbound_dedupe", "messages", "conversations"):
        op.drop_table(table, schema=SCHEMA)
