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
from services.messages.store.tables import messages
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
    return message_of(row) if row else None


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


async def mark_delivery(
    conn: AsyncConnection, message_id: uuid.UUID, outcome: MessageStatus, revision: int, now: datetime
) -> Message | None:
    """Guarded: only a stored (PENDING/SENT) message that is not streaming (docs/hardening.md #27)."""
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
    return message_of(row) if row else None


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
    return [message_of(r) for r in rows]
