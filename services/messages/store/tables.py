"""Tables of the messages service (schema `messages`) and their row → domain mappers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql as pg

from services.messages.domain import (
    EMBEDDING_DIMENSIONS,
    Channel,
    Conversation,
    ConversationStatus,
    Message,
    MessageRole,
    MessageStatus,
    ToolCall,
)
from zenthor.outbox import outbox_table

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
    )


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
    )


