"""SQL of messages; every change is stamped with the revision its writer allocated through
store.conversations.bump_conversation."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.messages.domain.conversations import Channel, Conversation
from services.messages.domain.messages import Message, MessageRole, MessageStatus, ToolCall
from services.messages.store.tables import messages, outbox, removed_messages
from zenthor import ids
from zenthor.db import DirectPool
from zenthor.pagination import PageRequest


def tool_calls_json(calls: Sequence[ToolCall]) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    out: list[dict[str, Any]] = []
    for call in calls:
        item: dict[str, Any] = {"name": call.name, "input": call.input}
        if call.has_output:
            item["output"] = call.output
        out.append(item)
    return out


def tool_calls_of(data: list[dict[str, Any]] | None) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(name=d["name"], input=d.get("input"), output=d.get("output"), has_output="output" in d)
        for d in data or ()
    )


def message_of(row: Any) -> Message:
    return Message(
        id=row.id,
        conversation_id=row.conversation_id,
        role=MessageRole(row.role),
        content=row.content,
        channel=Channel(row.channel),
        tool_calls=tool_calls_of(row.tool_calls),
        streaming=row.streaming,
        status=MessageStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        revision=row.revision,
        sequence=row.sequence,
        job_id=row.job_id,
    )


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
    job_id: uuid.UUID | None = None,
) -> Message:
    """A message on the conversation's own channel (docs/hardening.md #26) at the conversation's current
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
                tool_calls=tool_calls_json(tool_calls),
                streaming=streaming,
                status=status.value,
                sequence=0,
                idempotency_key=idempotency_key,
                job_id=job_id,
                revision=conversation.revision,
                created_at=now,
                updated_at=now,
            )
            .returning(messages)
        )
    ).one()
    return message_of(row)


async def get_message(conn: AsyncConnection, message_id: uuid.UUID) -> Message | None:
    row = (await conn.execute(sa.select(messages).where(messages.c.id == message_id))).first()
    return message_of(row) if row else None


async def get_message_by_idempotency_key(conn: AsyncConnection, conversation_id: uuid.UUID, key: str) -> Message | None:
    row = (
        await conn.execute(
            sa.select(messages).where(messages.c.conversation_id == conversation_id, messages.c.idempotency_key == key)
        )
    ).first()
    return message_of(row) if row else None


# The select list that wakes, at commit, the watchers of a changed conversation and its owners'
# list watchers (the keys of domain.conversations.owner_keys), for each `row` carrying the
# conversation's id and owners: the single-statement writers' twin of usecases' `announce`.
WAKE_WATCHERS = """pg_notify(%(conversation_channel)s, replace({row}.{conversation_id}::text, '-', '')) AS conversation,
       CASE WHEN {row}.user_id IS NOT NULL
            THEN pg_notify(%(list_channel)s, 'u' || replace({row}.user_id::text, '-', '')) END AS user_list,
       CASE WHEN {row}.contact_id IS NOT NULL
            THEN pg_notify(%(list_channel)s, 'c' || replace({row}.contact_id::text, '-', '')) END AS contact_list"""


# UpdateStreamingContent as one statement, one round trip on the direct pool (the runtime sends
# one per reply every 200 ms, and a watcher sees the text only after it commits: docs/architecture.md
# §6). It does in one snapshot what the unit-of-work writers do in several: lock the conversation
# with its next revision (every message writer takes that lock first), replace the content of an
# open assistant placeholder whose stored sequence is older, and wake the conversation's watchers
# and its owners' list watchers at commit. The message UPDATE comes after the conversation's, so a
# writer that finished the placeholder meanwhile (finalize, fail, a rollback's delete) is seen
# when the row is re-checked under its lock: no row comes back and nothing is woken. The
# conversation's revision may then have advanced without a change: a gap, which watchers skip.
STREAM_CONTENT = f"""
WITH target AS (
    SELECT conversation_id FROM messages.messages
    WHERE id = %(id)s AND role = 'assistant' AND streaming AND (%(sequence)s = 0 OR sequence < %(sequence)s)
), conversation AS (
    UPDATE messages.conversations c SET revision = c.revision + 1
    FROM target WHERE c.id = target.conversation_id
    RETURNING c.id, c.revision, c.user_id, c.contact_id
), updated AS (
    UPDATE messages.messages m
    SET content = %(content)s, revision = conversation.revision, updated_at = %(now)s,
        sequence = CASE WHEN %(sequence)s = 0 THEN m.sequence ELSE %(sequence)s END
    FROM conversation
    WHERE m.id = %(id)s AND m.role = 'assistant' AND m.streaming AND (%(sequence)s = 0 OR m.sequence < %(sequence)s)
    RETURNING conversation.id AS conversation_id, conversation.user_id, conversation.contact_id
)
SELECT {WAKE_WATCHERS.format(row="u", conversation_id="conversation_id")}
FROM updated u
"""


async def stream_content(
    db: DirectPool,
    message_id: uuid.UUID,
    content: str,
    sequence: int,
    now: datetime,
    *,
    conversation_channel: str,
    list_channel: str,
) -> bool:
    """True when the placeholder took the content; False when the guard refused (the caller
    reads the message to say why). The wake-up keys are domain.conversations.owner_keys'."""
    rows = await db.fetch(
        STREAM_CONTENT,
        {
            "id": message_id,
            "content": content,
            "sequence": sequence,
            "now": now,
            "conversation_channel": conversation_channel,
            "list_channel": list_channel,
        },
    )
    return bool(rows)


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
        values["tool_calls"] = tool_calls_json(tool_calls)
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
    return message_of(row) if row else None


def _open_placeholders_of_job(job_id: uuid.UUID, created_before: datetime | None) -> list[sa.ColumnElement[bool]]:
    """The placeholders of a job that still stream (role and streaming: as close_placeholder guards)."""
    where = [
        messages.c.job_id == job_id,
        messages.c.role == MessageRole.ASSISTANT.value,
        messages.c.streaming.is_(True),
    ]
    if created_before is not None:
        where.append(messages.c.created_at < created_before)
    return where


async def conversations_with_open_placeholders(
    conn: AsyncConnection, job_id: uuid.UUID, created_before: datetime | None
) -> list[uuid.UUID]:
    """The conversations holding open placeholders of the job, in id order (the lock order)."""
    query = (
        sa.select(messages.c.conversation_id)
        .where(*_open_placeholders_of_job(job_id, created_before))
        .distinct()
        .order_by(messages.c.conversation_id)
    )
    return list((await conn.execute(query)).scalars().all())


async def fail_open_placeholders_of_job(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    conversation_id: uuid.UUID,
    created_before: datetime | None,
    revision: int,
    now: datetime,
) -> list[Message]:
    """Fails the job's placeholders in one (locked) conversation that still stream, partial
    content kept; finalized and already failed ones do not match."""
    rows = (
        await conn.execute(
            sa.update(messages)
            .where(messages.c.conversation_id == conversation_id, *_open_placeholders_of_job(job_id, created_before))
            .values(streaming=False, status=MessageStatus.FAILED.value, revision=revision, updated_at=now)
            .returning(messages)
        )
    ).all()
    return sorted((message_of(r) for r in rows), key=lambda m: m.id)


# MarkMessagesDelivery as one statement, one round trip on the direct pool: the delivery outbox
# reports a batch of sends at a time (docs/hardening.md #27). As the unit-of-work writers do, it
# locks each conversation concerned (in id order, so two batches never deadlock) and allocates
# its revisions, one per message so a watcher's page never splits a revision; then marks each
# message that is stored (PENDING/SENT) and not streaming, a guard re-checked under the
# message's lock (a concurrent writer's change is seen, and a message that no longer qualifies
# leaves a revision gap, which watchers skip); and wakes the conversations' watchers and their
# owners' list watchers at commit. Answers one row per conversation woken, each carrying every
# marked id; no row when nothing was marked. `ids` hold each message at most once.
MARK_DELIVERIES = f"""
WITH markable AS (
    SELECT m.id, m.conversation_id, v.outcome,
           row_number() OVER (PARTITION BY m.conversation_id ORDER BY m.id) AS n
    FROM unnest(CAST(%(ids)s AS uuid[]), CAST(%(outcomes)s AS text[])) AS v(id, outcome)
    JOIN messages.messages m ON m.id = v.id
    WHERE NOT m.streaming AND m.status IN ('pending', 'sent')
), locked AS MATERIALIZED (
    SELECT c.id FROM messages.conversations c
    WHERE c.id IN (SELECT conversation_id FROM markable)
    ORDER BY c.id
    FOR UPDATE
), conversation AS (
    UPDATE messages.conversations c SET revision = c.revision + k.n
    FROM (SELECT conversation_id, count(*) AS n FROM markable GROUP BY conversation_id) k
    WHERE c.id = k.conversation_id AND c.id IN (SELECT id FROM locked)
    RETURNING c.id, c.revision - k.n AS base, c.user_id, c.contact_id
), marked AS (
    UPDATE messages.messages m
    SET status = t.outcome, revision = c.base + t.n, updated_at = %(now)s
    FROM markable t JOIN conversation c ON c.id = t.conversation_id
    WHERE m.id = t.id AND NOT m.streaming AND m.status IN ('pending', 'sent')
    RETURNING m.id, m.conversation_id
), woken AS (
    SELECT c.id, c.user_id, c.contact_id FROM conversation c
    WHERE c.id IN (SELECT conversation_id FROM marked)
)
SELECT {WAKE_WATCHERS.format(row="w", conversation_id="id")},
       (SELECT array_agg(id) FROM marked) AS marked_ids
FROM woken w
"""


async def mark_deliveries(
    db: DirectPool,
    outcomes: dict[uuid.UUID, MessageStatus],
    now: datetime,
    *,
    conversation_channel: str,
    list_channel: str,
) -> set[uuid.UUID]:
    """The messages that took their outcome; the others failed the guard or do not exist (the
    caller reads them to say which). The wake-up keys are domain.conversations.owner_keys'."""
    rows = await db.fetch(
        MARK_DELIVERIES,
        {
            "ids": list(outcomes),
            "outcomes": [o.value for o in outcomes.values()],
            "now": now,
            "conversation_channel": conversation_channel,
            "list_channel": list_channel,
        },
    )
    return set(rows[0].marked_ids) if rows else set()


async def get_messages(conn: AsyncConnection, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Message]:
    rows = (await conn.execute(sa.select(messages).where(messages.c.id.in_(list(message_ids))))).all()
    return {r.id: message_of(r) for r in rows}


async def list_messages(conn: AsyncConnection, conversation_id: uuid.UUID, page: PageRequest) -> list[Message]:
    query = sa.select(messages).where(messages.c.conversation_id == conversation_id).order_by(messages.c.id).limit(page.size)
    if page.after is not None:
        query = query.where(messages.c.id > page.after)
    return [message_of(r) for r in (await conn.execute(query)).all()]


async def history(conn: AsyncConnection, conversation_id: uuid.UUID, last: int | None) -> list[Message]:
    """All messages oldest first, or only the newest `last` (still oldest first)."""
    query = sa.select(messages).where(messages.c.conversation_id == conversation_id)
    if last is None:
        rows = (await conn.execute(query.order_by(messages.c.id))).all()
    else:
        rows = list(reversed((await conn.execute(query.order_by(messages.c.id.desc()).limit(last))).all()))
    return [message_of(r) for r in rows]


# --- deletion (double-texting `rollback`: docs/double-texting.md) ---


async def remove_messages(
    conn: AsyncConnection, where: Sequence[sa.ColumnElement[bool]], conversation_id: uuid.UUID, revision: int, now: datetime
) -> list[uuid.UUID]:
    """Deletes the conversation's messages matching `where` and leaves each id in removed_messages at
    `revision` (the caller holds the conversation's lock at that revision), so watchers learn of
    the deletion in change order. The ids deleted, in id order."""
    deleted = sa.delete(messages).where(messages.c.conversation_id == conversation_id, *where).returning(messages.c.id)
    gone = sorted((await conn.execute(deleted)).scalars().all())
    if gone:
        await conn.execute(
            sa.insert(removed_messages),
            [{"message_id": i, "conversation_id": conversation_id, "revision": revision, "removed_at": now} for i in gone],
        )
    return gone


def open_placeholders() -> list[sa.ColumnElement[bool]]:
    """A conversation's replies still streaming: the run in progress's partial reply."""
    return [messages.c.role == MessageRole.ASSISTANT.value, messages.c.streaming.is_(True)]


def replies_of_job(job_id: uuid.UUID) -> list[sa.ColumnElement[bool]]:
    """Every assistant message linked to the job, open or not."""
    return [messages.c.job_id == job_id, messages.c.role == MessageRole.ASSISTANT.value]


async def conversations_with_replies_of_job(conn: AsyncConnection, job_id: uuid.UUID) -> list[uuid.UUID]:
    """The conversations holding assistant messages of the job, in id order (the lock order)."""
    query = sa.select(messages.c.conversation_id).where(*replies_of_job(job_id)).distinct().order_by(messages.c.conversation_id)
    return list((await conn.execute(query)).scalars().all())


async def messages_awaiting_jobs(conn: AsyncConnection, topic: str, conversation_id: str) -> list[uuid.UUID]:
    """Messages of the conversation whose EnqueueJob event is still in this service's outbox
    (not delivered, not parked): agent_queue may not know their jobs yet, so a double-texting
    send counts them as queued. Read through the outbox's due index (undelivered rows only)."""
    rows = await conn.execute(
        sa.select(outbox.c.key).where(
            outbox.c.topic == topic,
            outbox.c.delivered_at.is_(None),
            outbox.c.dead_at.is_(None),
            outbox.c.payload["conversation_id"].astext == conversation_id,
        )
    )
    # The event key is the message id as this service formatted it (usecases.messages._enqueue_job).
    return sorted(ids.MESSAGE.parse(key, "key") for key in rows.scalars().all())
