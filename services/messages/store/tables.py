"""Tables of the messages service (schema `messages`), mirroring what the migrations create:
columns, indexes (partial ones with their predicate) and CHECK constraints. A test compares
this with the migrated database (docs/architecture.md §6)."""

from __future__ import annotations

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql as pg

from services.messages.domain.memories import EMBEDDING_DIMENSIONS
from zenthor.outbox import outbox_table

SCHEMA = "messages"
metadata = sa.MetaData(schema=SCHEMA)
TS = sa.DateTime(timezone=True)
UUID = pg.UUID(as_uuid=True)

conversations = sa.Table(
    "conversations",
    metadata,
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
    # What a message sent while the agent is busy does (docs/double-texting.md, migration 0003).
    sa.Column("double_texting", sa.Text, nullable=False, server_default="enqueue"),
    sa.CheckConstraint("channel IN ('web', 'whatsapp')", name="conversations_channel_check"),
    sa.CheckConstraint(
        "double_texting IN ('enqueue', 'reject', 'interrupt', 'rollback')", name="conversations_double_texting_check"
    ),
    sa.CheckConstraint("status IN ('active', 'archived')", name="conversations_status_check"),
    # Web conversations belong to a user, WhatsApp ones to a contact (and never to a user).
    sa.CheckConstraint(
        "(channel = 'web' AND user_id IS NOT NULL) OR (channel = 'whatsapp' AND contact_id IS NOT NULL AND user_id IS NULL)",
        name="conversations_owner_check",
    ),
    sa.CheckConstraint("channel = 'web' OR status = 'active'", name="conversations_whatsapp_active_check"),
    sa.Index("conversations_user_idx", "user_id", "id"),
    sa.Index("conversations_contact_idx", "contact_id", "id"),
    # WhatsApp conversations are only made by get-or-create and never archived: one per contact.
    sa.Index(
        "conversations_whatsapp_contact_key", "contact_id", unique=True, postgresql_where=sa.text("channel = 'whatsapp'")
    ),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("conversation_id", UUID, sa.ForeignKey(conversations.c.id), nullable=False),
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
    # The agent job a placeholder answers (agent_queue's id, no foreign key across services).
    sa.Column("job_id", UUID),
    sa.CheckConstraint("role IN ('user', 'assistant', 'system')", name="messages_role_check"),
    sa.CheckConstraint("channel IN ('web', 'whatsapp')", name="messages_channel_check"),
    sa.CheckConstraint("status IN ('pending', 'sent', 'delivered', 'failed')", name="messages_status_check"),
    # Only assistant placeholders ever stream (docs/hardening.md #28).
    sa.CheckConstraint("NOT streaming OR role = 'assistant'", name="messages_streaming_role_check"),
    sa.Index("messages_conversation_idx", "conversation_id", "id"),
    sa.Index("messages_conversation_revision_idx", "conversation_id", "revision"),
    sa.Index(
        "messages_idempotency_key",
        "conversation_id",
        "idempotency_key",
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    ),
    # FailJobPlaceholders: the placeholders of one job (docs/hardening.md #40).
    sa.Index("messages_job_idx", "job_id", postgresql_where=sa.text("job_id IS NOT NULL")),
)

# The ids of deleted messages (a rolled-back partial reply), stamped with the revision of the
# change that deleted them: WatchConversation reports them in change order (migration 0003).
removed_messages = sa.Table(
    "removed_messages",
    metadata,
    sa.Column("message_id", UUID, primary_key=True),
    sa.Column("conversation_id", UUID, sa.ForeignKey(conversations.c.id), nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("removed_at", TS, nullable=False),
    sa.Index("removed_messages_conversation_revision_idx", "conversation_id", "revision"),
)

inbound_dedupe = sa.Table(
    "inbound_dedupe",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("account_id", sa.Text),
    sa.Column("channel_message_id", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.CheckConstraint("channel IN ('web', 'whatsapp')", name="inbound_dedupe_channel_check"),
    # The key includes the account; a missing account is one value (docs/hardening.md #24, #35).
    sa.Index(
        "inbound_dedupe_key",
        "channel",
        "account_id",
        "channel_message_id",
        unique=True,
        postgresql_nulls_not_distinct=True,
    ),
    sa.Index("inbound_dedupe_created_idx", "created_at"),
)

memories = sa.Table(
    "memories",
    metadata,
    sa.Column("id", UUID, primary_key=True),
    sa.Column("conversation_id", UUID),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("embedding", Vector(EMBEDDING_DIMENSIONS), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.CheckConstraint("source IN ('conversation', 'manual')", name="memories_source_check"),
    sa.Index("memories_conversation_idx", "conversation_id", "id"),
    sa.Index(
        "memories_embedding_hnsw",
        "embedding",
        postgresql_using="hnsw",
        postgresql_ops={"embedding": "vector_cosine_ops"},
    ),
)

outbox = outbox_table(metadata, SCHEMA)
