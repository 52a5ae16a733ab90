"""Proto ⇄ domain conversions of the messages contract: ids, enums, page tokens, JSON values and
durations in; domain values out as response messages. The rules themselves live in domain/."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message as ProtoMessage

from services.messages.domain import conversations as conversation_rules
from services.messages.domain import dedupe as dedupe_rules
from services.messages.domain import memories as memory_rules
from services.messages.domain import messages as message_rules
from services.messages.domain.conversations import (
    Channel,
    Conversation,
    ConversationStatus,
    DoubleTexting,
)
from services.messages.domain.memories import Memory, MemoryHit, MemorySource
from services.messages.domain.messages import Message, MessageRole, MessageStatus, ToolCall
from services.messages.domain.recent import (
    RECENT_PAGE,
    RecentConversation,
    RecentPageRequest,
    recent_page_request,
)
from services.messages.domain.watch import WatchPosition
from zenthor import ids
from zenthor.convert import (
    optional_duration,
    optional_id,
    optional_str,
    optional_timestamp,
    timestamp,
)
from zenthor.gen.zenthor.common.v1 import types_pb2 as common
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb
from zenthor.pagination import PageRequest, check_size, page_request

CHANNEL_PB = {Channel.WEB: common.CHANNEL_WEB, Channel.WHATSAPP: common.CHANNEL_WHATSAPP}
CHANNEL_OF: dict[int, Channel] = {int(v): k for k, v in CHANNEL_PB.items()}
STATUS_PB = {ConversationStatus.ACTIVE: pb.CONVERSATION_STATUS_ACTIVE, ConversationStatus.ARCHIVED: pb.CONVERSATION_STATUS_ARCHIVED}
ROLE_PB = {MessageRole.USER: pb.MESSAGE_ROLE_USER, MessageRole.ASSISTANT: pb.MESSAGE_ROLE_ASSISTANT, MessageRole.SYSTEM: pb.MESSAGE_ROLE_SYSTEM}
MESSAGE_STATUS_PB = {
    MessageStatus.PENDING: pb.MESSAGE_STATUS_PENDING,
    MessageStatus.SENT: pb.MESSAGE_STATUS_SENT,
    MessageStatus.DELIVERED: pb.MESSAGE_STATUS_DELIVERED,
    MessageStatus.FAILED: pb.MESSAGE_STATUS_FAILED,
}
MESSAGE_STATUS_OF: dict[int, MessageStatus] = {int(v): k for k, v in MESSAGE_STATUS_PB.items()}
SOURCE_PB = {MemorySource.CONVERSATION: pb.MEMORY_SOURCE_CONVERSATION, MemorySource.MANUAL: pb.MEMORY_SOURCE_MANUAL}
SOURCE_OF: dict[int, MemorySource] = {int(v): k for k, v in SOURCE_PB.items()}
DOUBLE_TEXTING_PB = {
    DoubleTexting.ENQUEUE: pb.DOUBLE_TEXTING_ENQUEUE,
    DoubleTexting.REJECT: pb.DOUBLE_TEXTING_REJECT,
    DoubleTexting.INTERRUPT: pb.DOUBLE_TEXTING_INTERRUPT,
    DoubleTexting.ROLLBACK: pb.DOUBLE_TEXTING_ROLLBACK,
}
DOUBLE_TEXTING_OF: dict[int, DoubleTexting] = {int(v): k for k, v in DOUBLE_TEXTING_PB.items()}
MARK_OUTCOME_PB = {
    message_rules.MarkOutcome.MARKED: pb.DELIVERY_MARK_OUTCOME_MARKED,
    message_rules.MarkOutcome.ALREADY: pb.DELIVERY_MARK_OUTCOME_ALREADY,
    message_rules.MarkOutcome.NOT_FOUND: pb.DELIVERY_MARK_OUTCOME_NOT_FOUND,
    message_rules.MarkOutcome.REFUSED: pb.DELIVERY_MARK_OUTCOME_REFUSED,
}


# --- requests: ids, enums, optional fields, pages ---


def conversation_id(value: str, field: str = "conversation_id") -> uuid.UUID:
    return ids.CONVERSATION.parse(value, field)


def optional_conversation_id(message: ProtoMessage, field: str = "conversation_id") -> uuid.UUID | None:
    return optional_id(ids.CONVERSATION, message, field)


def conversation_ids(values: Sequence[str], field: str = "ids") -> list[uuid.UUID]:
    conversation_rules.check_batch_ids(len(values), field)
    return [ids.CONVERSATION.parse(v, f"{field}[{i}]") for i, v in enumerate(values)]


def message_id(value: str, field: str = "message_id") -> uuid.UUID:
    return ids.MESSAGE.parse(value, field)


def memory_id(value: str, field: str = "id") -> uuid.UUID:
    return ids.MEMORY.parse(value, field)


def optional_user_id(message: ProtoMessage, field: str = "user_id") -> uuid.UUID | None:
    return optional_id(ids.USER, message, field)


def optional_contact_id(message: ProtoMessage, field: str = "contact_id") -> uuid.UUID | None:
    return optional_id(ids.CONTACT, message, field)


def optional_agent_id(message: ProtoMessage, field: str = "agent_id") -> uuid.UUID | None:
    return optional_id(ids.AGENT, message, field)


def optional_job_id(message: ProtoMessage, field: str = "job_id") -> uuid.UUID | None:
    return optional_id(ids.JOB, message, field)


def job_id(value: str, field: str = "job_id") -> uuid.UUID:
    return ids.JOB.parse(value, field)


def optional_title(message: ProtoMessage, field: str = "title") -> str | None:
    return optional_str(message, field)


def channel(value: int, field: str = "channel") -> Channel:
    return conversation_rules.check_channel(CHANNEL_OF.get(value), field)


def double_texting(value: int, field: str = "double_texting") -> DoubleTexting | None:
    """A strategy, or None for UNSPECIFIED: on a send that means the conversation's setting, on a
    setting the domain refuses it. A value this build does not know is INVALID_ARGUMENT."""
    if value == pb.DOUBLE_TEXTING_UNSPECIFIED:
        return None
    return conversation_rules.check_double_texting(DOUBLE_TEXTING_OF.get(value), field)


def memory_source(value: int, field: str = "source") -> MemorySource:
    return memory_rules.check_source(SOURCE_OF.get(value), field)


def optional_memory_source(request: pb.SearchMemoriesRequest, field: str = "source") -> MemorySource | None:
    return memory_source(request.source, field) if request.HasField("source") else None


def delivery_outcome(value: int, field: str = "status") -> MessageStatus:
    return message_rules.check_delivery_outcome(MESSAGE_STATUS_OF.get(value), field)


def delivery_reports(request: pb.MarkMessagesDeliveryRequest) -> list[tuple[uuid.UUID, MessageStatus]]:
    return [
        (message_id(item.message_id, f"items[{i}].message_id"), delivery_outcome(item.status, f"items[{i}].status"))
        for i, item in enumerate(request.items)
    ]


def older_than(request: pb.CleanupInboundDedupeRequest) -> timedelta | None:
    return optional_duration(request, "older_than", maximum=dedupe_rules.MAX_DEDUPE_RETENTION)


def created_before(request: pb.FailJobPlaceholdersRequest) -> datetime | None:
    return optional_timestamp(request, "created_before")


def conversations_page(request: pb.ListConversationsRequest) -> PageRequest:
    return page_request(request.page_size, request.page_token, conversation_rules.CONVERSATIONS_PAGE)


def messages_page(request: pb.ListMessagesRequest) -> PageRequest:
    return page_request(request.page_size, request.page_token, message_rules.MESSAGES_PAGE)


def memories_page(request: pb.ListMemoriesRequest) -> PageRequest:
    return page_request(request.page_size, request.page_token, memory_rules.MEMORIES_PAGE)


def recent_page(request: pb.ListRecentConversationsRequest) -> RecentPageRequest:
    return recent_page_request(request.page_size, request.page_token)


def watched_list_size(request: pb.WatchConversationListRequest) -> int:
    """How many recent conversations each snapshot holds (the first page of the list)."""
    return check_size(request.page_size, RECENT_PAGE)


def resume_position(request: pb.WatchConversationRequest, conversation: uuid.UUID) -> WatchPosition | None:
    return WatchPosition.decode(request.resume_position, conversation, "resume_position")


def _json(value: struct_pb2.Value) -> Any:
    return json_format.MessageToDict(value)


def _value(data: Any) -> struct_pb2.Value:
    return json_format.ParseDict(data, struct_pb2.Value())


def tool_calls(calls: Iterable[pb.ToolCall]) -> list[ToolCall]:
    return [
        ToolCall(
            name=c.name,
            input=_json(c.input) if c.HasField("input") else None,
            output=_json(c.output) if c.HasField("output") else None,
            has_output=c.HasField("output"),
        )
        for c in calls
    ]


# --- responses ---


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
        double_texting=DOUBLE_TEXTING_PB[c.double_texting],
    )


def optional_conversation_pb(c: Conversation | None) -> pb.Conversation | None:
    return conversation_pb(c) if c is not None else None


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


def message_refs(values: Sequence[uuid.UUID]) -> list[str]:
    return [ids.MESSAGE.format(v) for v in values]


def optional_message_pb(m: Message | None) -> pb.Message | None:
    return message_pb(m) if m is not None else None


def delivery_mark_pb(mark: message_rules.DeliveryMark) -> pb.DeliveryMark:
    return pb.DeliveryMark(
        message_id=ids.MESSAGE.format(mark.message_id), outcome=MARK_OUTCOME_PB[mark.outcome], reason=mark.reason
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
