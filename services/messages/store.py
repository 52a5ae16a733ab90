"""SQL of conversations and messages (schema `messages`); dedupe and memories live in
store_memories.py.

Change order: every write to a conversation or its messages first bumps the conversation's
`revision` (`bump_conversation`, an UPDATE … RETURNING that also row-locks the conversation until
commit) and stamps the changed rows with that revision. Writers of one conversation therefore
commit in revision order, so a watcher that has read everything up to revision R never sees a
smaller revision appear later: "everything after R" is a complete resume point.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.messages.domain import (
    EMBEDDING_DIMENSIONS,
    Channel,
    Conversation,
    ConversationStatus,
    Message,
    MessageRole,
    MessageStatus,
    RecentConversation,
    RecentCursor,
    ToolCall,
)
from zenthor.outbox import outbox_table
from zenthor.pagination import PageRequest

SCHEMA = "messages"
metadata = sa.MetaData(schema=SCHEMA)
TS = sa.DateTime(timezone=True)

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("user_id", pg.UUID(as_uuid=True)),
    sa.Column("contact_id", pg.UUID(as_uuid=True)),
    sa.Column("agent_id", pg.UUID(as_uuid=True)),
    sa.Column("title", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("meta_revision", sa.BigInteger, nullable=False, server_default="0"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("conversation_id", pg.UUID(as_uuid=True), sa.ForeignKey(conversations.c.id), nullable=False),
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
)

inbound_dedupe = sa.Table(
    "inbound_dedupe",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("channel", sa.Text, nullable=False),
    sa.Column("account_id", sa.Text),
    sa.Column("channel_message_id", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

memories = sa.Table(
    "memories",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("conversation_id", pg.UUID(as_uuid=True)),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("embedding", Vector(EMBEDDING_DIMENSIONS), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

outbox = outbox_table(metadata, SCHEMA)


def _conversation(row: Any) -> Conversation:
    return Conversation(
        id=row.id,
        channel=Channel(row.channel),
        user_id=row.user_id,
        contact_id=row.contact_id,
        agent_id=row.agent_id,
        title=row.title,
        status=ConversationStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        revision=row.revision,
        meta_revision=row.meta_revision,
    )


def _tool_calls_json(calls: Sequence[ToolCall]) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    out: list[dict[str, Any]] = []
    for call in calls:
        item: dict[str, Any] = {"name": call.name, "input": call.input}
        if call.has_output:
            item["output"] = call.output
        out.append(item)
    return out


def _tool_calls(data: list[dict[str, Any]] | None) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(name=d["name"], input=d.get("input"), output=d.get("output"), has_output="output" in d)
        for d in data or ()
    )


def _message(row: Any) -> Message:
    return Message(
        id=row.id,
        conversation_id=row.conversation_id,
        role=MessageRole(row.role),
        content=row.content,
        channel=Channel(row.channel),
        tool_calls=_tool_calls(row.tool_calls),
        streaming=row.streaming,
        status=MessageStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        revision=row.revision,
        sequence=row.sequence,
    )


# --- conversations ---


async def get_conversation(conn: AsyncConnection, conversation_id: uuid.UUID) -> Conversation | None:
    row = (await conn.execute(sa.select(conversations).where(conversations.c.id == conversation_id))).first()
    return _conversation(row) if row else None


async def get_conversations(conn: AsyncConnection, ids: Sequence[uuid.UUID]) -> list[Conversation]:
    rows = (await conn.execute(sa.select(conversations).where(conversations.c.id.in_(list(ids))))).all()
    return [_conversation(r) for r in rows]


async def bump_conversation(conn: AsyncConnection, conversation_id: uuid.UUID) -> Conversation | None:
    """Allocates the next revision of the conversation and locks its row until commit (see
    the module docstring). None when it does not exist."""
    row = (
        await conn.execute(
            sa.update(conversations)
            .where(conversations.c.id == conversation_id)
            .values(revision=conversations.c.revision + 1)
            .returning(conversations)
        )
    ).first()
    return _conversation(row) if row else None


# Serializes get-or-create per owner: two first messages of one contact (or two web calls for
# one user) must end with one conversation. A transaction-scoped advisory lock, because web
# owners may legitimately hold several active conversations (CreateConversation), so no unique
# index can express "first active one".
LOCK_OWNER = sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


async def lock_owner(conn: AsyncConnection, channel: Channel, owner_id: uuid.UUID) -> None:
    await conn.execute(LOCK_OWNER, {"key": f"messages.conversation-owner:{channel.value}:{owner_id.hex}"})


async def first_active_conversation(conn: AsyncConnection, channel: Channel, owner_id: uuid.UUID) -> Conversation | None:
    owner = conversations.c.user_id if channel is Channel.WEB else conversations.c.contact_id
    row = (
        await conn.execute(
            sa.select(conversations)
            .where(owner == owner_id, conversations.c.channel == channel.value, conversations.c.status == "active")
            .order_by(conversations.c.id)
            .limit(1)
        )
    ).first()
    return _conversation(row) if row else None


async def insert_conversation(
    conn: AsyncConnection,
    *,
    conversation_id: uuid.UUID,
    channel: Channel,
    user_id: uuid.UUID | None,
    contact_id: uuid.UUID | None,
    agent_id: uuid.UUID | None,
    title: str | None,
    now: datetime,
) -> Conversation:
    row = (
        await conn.execute(
            sa.insert(conversations)
            .values(
                id=conversation_id,
                channel=channel.value,
                user_id=user_id,
                contact_id=contact_id,
                agent_id=agent_id,
                title=title,
                status=ConversationStatus.ACTIVE.value,
                created_at=now,
                updated_at=now,
                revision=1,
                meta_revision=1,
            )
            .returning(conversations)
        )
    ).one()
    return _conversation(row)


async def list_conversations_of_user(conn: AsyncConnection, user_id: uuid.UUID, page: PageRequest) -> list[Conversation]:
    # ids are UUIDv7: id order is creation order (spec: ascending by creation).
    query = sa.select(conversations).where(conversations.c.user_id == user_id).order_by(conversations.c.id).limit(page.size)
    if page.after is not None:
        query = query.where(conversations.c.id > page.after)
    return [_conversation(r) for r in (await conn.execute(query)).all()]


async def set_conversation_meta(
    conn: AsyncConnection,
    conversation_id: uuid.UUID,
    revision: int,
    now: datetime,
    *,
    title: str | None = None,
    status: ConversationStatus | None = None,
) -> Conversation:
    """Title and/or status at `revision` (already allocated by bump_conversation)."""
    values: dict[str, Any] = {"meta_revision": revision, "updated_at": now}
    if title is not None:
        values["title"] = title
    if status is not None:
        values["status"] = status.value
    row = (
        await conn.execute(
            sa.update(conversations).where(conversations.c.id == conversation_id).values(**values).returning(conversations)
        )
    ).one()
    return _conversation(row)


# The caller's active conversations with their newest message, most recent activity first.
RECENT_CONVERSATIONS = sa.text(
    """
    WITH mine AS (
        -- spec step 1: the caller's own conversations (web).
        SELECT c.*, 0 AS part FROM messages.conversations c
         WHERE c.user_id = :user_id AND c.status = 'active'
        UNION ALL
        -- spec step 2: WhatsApp conversations of the linked contact. A WhatsApp row never has a
        -- user_id (table check), so the two parts cannot overlap (spec step 3's de-duplication).
        SELECT c.*, 1 AS part FROM messages.conversations c
         WHERE c.contact_id = CAST(:contact_id AS uuid) AND c.channel = 'whatsapp' AND c.status = 'active'
    ),
    listed AS (
        -- spec step 4: the newest message of each (any role, empty placeholders included).
        SELECT mine.*, last.id AS last_id, last.content AS last_content, last.role AS last_role,
               last.channel AS last_channel, last.tool_calls AS last_tool_calls,
               last.streaming AS last_streaming, last.status AS last_status,
               last.created_at AS last_created_at, last.updated_at AS last_updated_at,
               last.revision AS last_revision, last.sequence AS last_sequence,
               COALESCE(last.created_at, mine.created_at) AS activity_at
          FROM mine
          LEFT JOIN LATERAL (
                SELECT m.* FROM messages.messages m
                 WHERE m.conversation_id = mine.id
                 ORDER BY m.id DESC
                 LIMIT 1
          ) last ON true
    )
    -- spec step 5: newest activity first; ties keep step 3's order (web part first, then creation).
    SELECT * FROM listed
     WHERE CAST(:after_at AS timestamptz) IS NULL
        OR activity_at < CAST(:after_at AS timestamptz)
        OR (activity_at = CAST(:after_at AS timestamptz) AND (part, id) > (CAST(:after_part AS int), CAST(:after_id AS uuid)))
     ORDER BY activity_at DESC, part, id
     LIMIT :limit
    """
)


async def recent_conversations(
    conn: AsyncConnection, user_id: uuid.UUID, contact_id: uuid.UUID | None, after: RecentCursor | None, limit: int
) -> list[RecentConversation]:
    rows = (
        await conn.execute(
            RECENT_CONVERSATIONS,
            {
                "user_id": user_id,
                "contact_id": contact_id,
                "after_at": after.activity_at if after else None,
                "after_part": after.part if after else None,
                "after_id": after.conversation_id if after else None,
                "limit": limit,
            },
        )
    ).all()
    result = []
    for row in rows:
        last = None
        if row.last_id is not None:
            last = Message(
                id=row.last_id,
                conversation_id=row.id,
                role=MessageRole(row.last_role),
                content=row.last_content,
                channel=Channel(row.last_channel),
                tool_calls=_tool_calls(row.last_tool_calls),
                streaming=row.last_streaming,
                status=MessageStatus(row.last_status),
                created_at=row.last_created_at,
                updated_at=row.last_updated_at,
                revision=row.last_revision,
                sequence=row.last_sequence,
            )
        result.append(RecentConversation(_conversation(row), last, row.activity_at, row.part))
    return result


# --- messages ---


async def insert_message(
    conn: AsyncConnection,
    *,
    message_id: uuid.UUID,
    conversation: Conversation,
    role: MessageRole,
    content: str,
    status: MessageStatus,
    now: datetime,
    streaming: bool = False,
    tool_calls: Sequence[ToolCall] = (),
    idempotency_key: str | None = None,
) -> Message:
    """A message on the conversation's own channel (finding 26) at the conversation's current
    revision (the caller bumped it)."""
    row = (
        await conn.execute(
            sa.insert(messages)
            .values(
                id=message_id,
                conversation_id=conversation.id,
                role=role.value,
                content=content,
                channel=conversation.channel.value,
                tool_calls=_tool_calls_json(tool_calls),
                streaming=streaming,
                status=status.value,
                sequence=0,
                idempotency_key=idempotency_key,
                revision=conversation.revision,
                created_at=now,
                updated_at=now,
            )
            .returning(messages)
        )
    ).one()
    return _message(row)


async def get_message(conn: AsyncConnection, message_id: uuid.UUID) -> Message | None:
    row = (await conn.execute(sa.select(messages).where(messages.c.id == message_id))).first()
    return _message(row) if row else None


async def get_message_by_idempotency_key(conn: AsyncConnection, conversation_id: uuid.UUID, key: str) -> Message | None:
    row = (
        await conn.execute(
            sa.select(messages).where(messages.c.conversation_id == conversation_id, messages.c.idempotency_key == key)
        )
    ).first()
    return _message(row) if row else None


async def update_streaming_content(
    conn: AsyncConnection, message_id: uuid.UUID, content: str, sequence: int, revision: int, now: datetime
) -> Message | None:
    """Guarded: only an open assistant placeholder, only a newer sequence (0 = unsequenced).
    None when the guard refused; the caller says why."""
    stmt = sa.update(messages).where(
        messages.c.id == message_id,
        messages.c.role == MessageRole.ASSISTANT.value,
        messages.c.streaming.is_(True),
    )
    values: dict[str, Any] = {"content": content, "revision": revision, "updated_at": now}
    if sequence:
        stmt = stmt.where(messages.c.sequence < sequence)
        values["sequence"] = sequence
    row = (await conn.execute(stmt.values(**values).returning(messages))).first()
    return _message(row) if row else None


async def close_placeholder(
    conn: AsyncConnection,
    message_id: uuid.UUID,
    revision: int,
    now: datetime,
    *,
    status: MessageStatus,
    content: str | None = None,
    tool_calls: Sequence[ToolCall] = (),
) -> Message | None:
    """Ends streaming: finalize (SENT, content and tool calls replaced) or fail (FAILED,
    partial content kept). Guarded: only an open assistant placeholder."""
    values: dict[str, Any] = {"streaming": False, "status": status.value, "revision": revision, "updated_at": now}
    if content is not None:
        values["content"] = content
        values["tool_calls"] = _tool_calls_json(tool_calls)
    row = (
        await conn.execute(
            sa.update(messages)
            .where(
                messages.c.id == message_id,
                messages.c.role == MessageRole.ASSISTANT.value,
                messages.c.streaming.is_(True),
            )
            .values(**values)
            .returning(messages)
        )
    ).first()
    return _message(row) if row else None


async def mark_delivery(
    conn: AsyncConnection, message_id: uuid.UUID, outcome: MessageStatus, revision: int, now: datetime
) -> Message | None:
    """Guarded: only a stored (PENDING/SENT) message that is not streaming (finding 27)."""
    row = (
        await conn.execute(
            sa.update(messages)
            .where(
                messages.c.id == message_id,
                messages.c.streaming.is_(False),
                messages.c.status.in_([MessageStatus.PENDING.value, MessageStatus.SENT.value]),
            )
            .values(status=outcome.value, revision=revision, updated_at=now)
            .returning(messages)
        )
    ).first()
    return _message(row) if row else None


async def list_messages(conn: AsyncConnection, conversation_id: uuid.UUID, page: PageRequest) -> list[Message]:
    query = sa.select(messages).where(messages.c.conversation_id == conversation_id).order_by(messages.c.id).limit(page.size)
    if page.after is not None:
        query = query.where(messages.c.id > page.after)
    return [_message(r) for r in (await conn.execute(query)).all()]


async def history(conn: AsyncConnection, conversation_id: uuid.UUID, last: int | None) -> list[Message]:
    """All messages oldest first, or only the newest `last` (still oldest first)."""
    query = sa.select(messages).where(messages.c.conversation_id == conversation_id)
    if last is None:
        rows = (await conn.execute(query.order_by(messages.c.id))).all()
    else:
        rows = list(reversed((await conn.execute(query.order_by(messages.c.id.desc()).limit(last))).all()))
    return [_message(r) for r in rows]


async def changed_messages(
    conn: AsyncConnection, conversation_id: uuid.UUID, after: int, upto: int, limit: int
) -> list[Message]:
    """Messages whose last change has a revision in (after, upto], in change order. Rows
    changed again after `upto` are left for the next read (their newer state supersedes)."""
    rows = (
        await conn.execute(
            sa.select(messages)
            .where(
                messages.c.conversation_id == conversation_id,
                messages.c.revision > after,
                messages.c.revision <= upto,
            )
            .order_by(messages.c.revision, messages.c.id)
            .limit(limit)
        )
    ).all()
    return [_message(r) for r in rows]
