"""SQL of conversations.

Change order: every write to a conversation or its messages first bumps the conversation's
`revision` (`bump_conversation`, an UPDATE … RETURNING that also row-locks the conversation until
commit) and stamps the changed rows with that revision. Writers of one conversation therefore
commit in revision order, so a watcher that has read everything up to revision R never sees a
smaller revision appear later: "everything after R" is a complete resume point.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.messages.domain.conversations import (
    Channel,
    Conversation,
    ConversationStatus,
    DoubleTexting,
)
from services.messages.domain.messages import Message, MessageRole, MessageStatus
from services.messages.domain.recent import RecentConversation, RecentCursor
from services.messages.store.messages import message_of, tool_calls_of
from services.messages.store.tables import conversations
from zenthor.db import DirectPool
from zenthor.pagination import PageRequest


def conversation_of(row: Any) -> Conversation:
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
        double_texting=DoubleTexting(row.double_texting),
    )


async def get_conversation(conn: AsyncConnection, conversation_id: uuid.UUID) -> Conversation | None:
    row = (await conn.execute(sa.select(conversations).where(conversations.c.id == conversation_id))).first()
    return conversation_of(row) if row else None


async def get_conversations(conn: AsyncConnection, ids: Sequence[uuid.UUID]) -> list[Conversation]:
    rows = (await conn.execute(sa.select(conversations).where(conversations.c.id.in_(list(ids))))).all()
    return [conversation_of(r) for r in rows]


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
    return conversation_of(row) if row else None


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
            .where(owner == owner_id, conversations.c.channel == channel.value, conversations.c.status == ConversationStatus.ACTIVE.value)
            .order_by(conversations.c.id)
            .limit(1)
        )
    ).first()
    return conversation_of(row) if row else None


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
    return conversation_of(row)


async def list_conversations_of_user(conn: AsyncConnection, user_id: uuid.UUID, page: PageRequest) -> list[Conversation]:
    # ids are UUIDv7: id order is creation order (the list is ascending by creation).
    query = sa.select(conversations).where(conversations.c.user_id == user_id).order_by(conversations.c.id).limit(page.size)
    if page.after is not None:
        query = query.where(conversations.c.id > page.after)
    return [conversation_of(r) for r in (await conn.execute(query)).all()]


async def set_conversation_meta(
    conn: AsyncConnection,
    conversation_id: uuid.UUID,
    revision: int,
    now: datetime,
    *,
    title: str | None = None,
    status: ConversationStatus | None = None,
    double_texting: DoubleTexting | None = None,
) -> Conversation:
    """Title, status and/or double-texting setting at `revision` (already allocated by
    bump_conversation)."""
    values: dict[str, Any] = {"meta_revision": revision, "updated_at": now}
    if title is not None:
        values["title"] = title
    if status is not None:
        values["status"] = status.value
    if double_texting is not None:
        values["double_texting"] = double_texting.value
    row = (
        await conn.execute(
            sa.update(conversations).where(conversations.c.id == conversation_id).values(**values).returning(conversations)
        )
    ).one()
    return conversation_of(row)


# The caller's active conversations with their newest message, most recent activity first.
RECENT_CONVERSATIONS = sa.text(
    """
    WITH mine AS (
        -- 1. the caller's own conversations (web).
        SELECT c.*, 0 AS part FROM messages.conversations c
         WHERE c.user_id = :user_id AND c.status = 'active'
        UNION ALL
        -- 2. WhatsApp conversations of the linked contact. A WhatsApp row never has a user_id
        -- (table check), so the two parts cannot overlap and need no de-duplication.
        SELECT c.*, 1 AS part FROM messages.conversations c
         WHERE c.contact_id = CAST(:contact_id AS uuid) AND c.channel = 'whatsapp' AND c.status = 'active'
    ),
    listed AS (
        -- 3. the newest message of each (any role, empty placeholders included).
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
    -- 4. newest activity first; ties put the web part first, then creation order.
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
                tool_calls=tool_calls_of(row.last_tool_calls),
                streaming=row.last_streaming,
                status=MessageStatus(row.last_status),
                created_at=row.last_created_at,
                updated_at=row.last_updated_at,
                revision=row.last_revision,
                sequence=row.last_sequence,
            )
        result.append(RecentConversation(conversation_of(row), last, row.activity_at, row.part))
    return result


# A watcher's read (services/messages/usecases/watch.py): the conversation, its messages changed
# after the watcher's position up to the revision that row shows, and the deletions in the same
# range, as of one snapshot and in one round trip (DirectPool.read_together). Every revision up to
# the row's has committed (this module's docstring), so nothing at or below it can still appear.
WATCH_CONVERSATION = "SELECT * FROM messages.conversations WHERE id = %(conversation_id)s"
WATCH_CHANGED = """
SELECT m.* FROM messages.messages m
WHERE m.conversation_id = %(conversation_id)s AND m.revision > %(after)s
  AND m.revision <= (SELECT revision FROM messages.conversations WHERE id = %(conversation_id)s)
ORDER BY m.revision, m.id
LIMIT %(limit)s
"""
WATCH_REMOVED = """
SELECT r.message_id, r.revision FROM messages.removed_messages r
WHERE r.conversation_id = %(conversation_id)s AND r.revision > %(after)s
  AND r.revision <= (SELECT revision FROM messages.conversations WHERE id = %(conversation_id)s)
ORDER BY r.revision, r.message_id
"""


@dataclass(frozen=True)
class WatchRead:
    conversation: Conversation | None
    # Messages whose last change has a revision in (after, conversation.revision], in change
    # order, at most `limit`: rows changed again later are left for the next read.
    changed: list[Message]
    # Messages deleted by changes in the same range, in change order, with those revisions.
    removed: list[tuple[uuid.UUID, int]]


async def watch_read(db: DirectPool, conversation_id: uuid.UUID, after: int, limit: int) -> WatchRead:
    params = {"conversation_id": conversation_id, "after": after, "limit": limit}
    conversation, changed, removed = await db.read_together(
        [(WATCH_CONVERSATION, params), (WATCH_CHANGED, params), (WATCH_REMOVED, params)]
    )
    return WatchRead(
        conversation_of(conversation[0]) if conversation else None,
        [message_of(r) for r in changed],
        [(r.message_id, r.revision) for r in removed],
    )
