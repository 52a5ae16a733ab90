"""Proto ⇄ domain conversions of the messages contract (transport only, no rules)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

from services.messages.domain import (
    Channel,
    Conversation,
    ConversationStatus,
    Memory,
    MemoryHit,
    MemorySource,
    Message,
    MessageRole,
    MessageStatus,
    RecentConversation,
    ToolCall,
)
from zenthor import ids
from zenthor.convert import timestamp
from zenthor.errors import InvalidArgument
from zenthor.gen.zenthor.common.v1 import types_pb2 as common
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb

CHANNEL_PB = {Channel.WEB: common.CHANNEL_WEB, Channel.WHATSAPP: common.CHANNEL_WHATSAPP}
CHANNEL_OF = {v: k for k, v in CHANNEL_PB.items()}
STATUS_PB = {ConversationStatus.ACTIVE: pb.CONVERSATION_STATUS_ACTIVE, ConversationStatus.ARCHIVED: pb.CONVERSATION_STATUS_ARCHIVED}
ROLE_PB = {MessageRole.USER: pb.MESSAGE_ROLE_USER, MessageRole.ASSISTANT: pb.MESSAGE_ROLE_ASSISTANT, MessageRole.SYSTEM: pb.MESSAGE_ROLE_SYSTEM}
MESSAGE_STATUS_PB = {
    MessageStatus.PENDING: pb.MESSAGE_STATUS_PENDING,
    MessageStatus.SENT: pb.MESSAGE_STATUS_SENT,
    MessageStatus.DELIVERED: pb.MESSAGE_STATUS_DELIVERED,
    MessageStatus.FAILED: pb.MESSAGE_STATUS_FAILED,
}
MESSAGE_STATUS_OF = {v: k for k, v in MESSAGE_STATUS_PB.items()}
SOURCE_PB = {MemorySource.CONVERSATION: pb.MEMORY_SOURCE_CONVERSATION, MemorySource.MANUAL: pb.MEMORY_SOURCE_MANUAL}
SOURCE_OF = {v: k for k, v in SOURCE_PB.items()}


def channel(value: int, field: str = "channel") -> Channel:
    if value not in CHANNEL_OF:
        raise InvalidArgument(field, "must be CHANNEL_WEB or CHANNEL_WHATSAPP")
    return CHANNEL_OF[value]  # type: ignore[index]


def memory_source(value: int, field: str = "source") -> MemorySource:
    if value not in SOURCE_OF:
        raise InvalidArgument(field, "must be MEMORY_SOURCE_CONVERSATION or MEMORY_SOURCE_MANUAL")
    return SOURCE_OF[value]  # type: ignore[index]


def delivery_outcome(value: int, field: str = "status") -> MessageStatus:
    if value not in (pb.MESSAGE_STATUS_DELIVERED, pb.MESSAGE_STATUS_FAILED):
        raise InvalidArgument(field, "must be MESSAGE_STATUS_DELIVERED or MESSAGE_STATUS_FAILED")
    return MESSAGE_STATUS_OF[value]  # type: ignore[index]


def optional(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def _json(value: struct_pb2.Value) -> Any:
    return json_format.MessageToDict(value)


def _value(data: Any) -> struct_pb2.Value:
    return json_format.ParseDict(data, struct_pb2.Value())


def tool_calls(calls: Any) -> list[ToolCall]:
    return [
        ToolCall(
            name=c.name,
            input=_json(c.input) if c.HasField("input") else None,
            output=_json(c.output) if c.HasField("output") else None,
            has_output=c.HasField("output"),
        )
        for c in calls
    ]


def conversation_pb(c: Conversation) -> pb.Conversation:
    return pb.Conversation(
        id=ids.CONVERSATION.format(c.id),
        create_time=timestamp(c.created_at),
        channel=CHANNEL_PB[c.channel],
        user_id=ids.USER.format(c.user_id) if c.user_id else None,
        contact_id=ids.CONTACT.format(c.contact_id) if c.contact_id else None,
        agent_id=ids.AGENT.format(c.agent_id) if c.agent_id else None,
        title=c.title,
        status=STATUS_PB[c.status],
    )


def tool_call_pb(call: ToolCall) -> pb.ToolCall:
    return pb.ToolCall(name=call.name, input=_value(call.input), output=_value(call.output) if call.has_output else None)


def message_pb(m: Message) -> pb.Message:
    return pb.Message(
        id=ids.MESSAGE.format(m.id),
        create_time=timestamp(m.created_at),
        update_time=timestamp(m.updated_at),
        conversation_id=ids.CONVERSATION.format(m.conversation_id),
        role=ROLE_PB[m.role],
        content=m.content,
        channel=CHANNEL_PB[m.channel],
        tool_calls=[tool_call_pb(t) for t in m.tool_calls],
        streaming=m.streaming,
        status=MESSAGE_STATUS_PB[m.status],
    )


def recent_pb(r: RecentConversation) -> pb.RecentConversation:
    last = r.last_message
    return pb.RecentConversation(
        conversation=conversation_pb(r.conversation),
        last_message=pb.LastMessage(
            message_id=ids.MESSAGE.format(last.id),
            content=last.content,
            role=ROLE_PB[last.role],
            create_time=timestamp(last.created_at),
        )
        if last
        else None,
    )


def memory_pb(m: Memory) -> pb.Memory:
    return pb.Memory(
        id=ids.MEMORY.format(m.id),
        create_time=timestamp(m.created_at),
        conversation_id=ids.CONVERSATION.format(m.conversation_id) if m.conversation_id else None,
        content=m.content,
        source=SOURCE_PB[m.source],
        embedding=list(m.embedding or ()),
    )


def hit_pb(h: MemoryHit) -> pb.MemoryHit:
    m = h.memory
    return pb.MemoryHit(
        memory_id=ids.MEMORY.format(m.id),
        content=m.content,
        source=SOURCE_PB[m.source],
        score=h.score,
        conversation_id=ids.CONVERSATION.format(m.conversation_id) if m.conversation_id else None,
        create_time=timestamp(m.created_at),
    )
