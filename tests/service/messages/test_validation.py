"""Bad input on every RPC: INVALID_ARGUMENT naming the field, and nothing written. Content is
limited to 100 000 Unicode characters (messages.proto), titles to 200."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from services.messages.domain.watch import WatchPosition
from tests.service.conftest import Running
from tests.service.messages.conftest import People
from tests.support.grpc_client import service
from tests.support.messages_builders import counts, web_conversation
from tests.support.streams import READ_TIMEOUT_S
from zenthor import ids
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.common.v1 import types_pb2 as common
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb

TOO_LONG = "x" * 100_001
VECTOR = [0.5] * 1536


async def failure(call: Any) -> grpc.aio.AioRpcError:
    """The error of a unary or server-streaming call that must fail."""
    try:
        if hasattr(call, "read"):
            async with asyncio.timeout(READ_TIMEOUT_S):
                async for _ in call:
                    pass
        else:
            await call
    except grpc.aio.AioRpcError as e:
        return e
    raise AssertionError("the call succeeded but was expected to fail")


def bad_requests(conv: str, msg: str, placeholder: str, user: Any) -> list[tuple[str, str, Callable[[Any], Any]]]:
    """(rpc, field it must name, call) — one bad field each, the rest valid."""
    foreign_position = WatchPosition(ids.CONVERSATION.new(), 1).encode()  # another conversation's
    s = service()
    wrong_prefix = ids.MESSAGE.format(ids.MESSAGE.new())
    job = ids.JOB.format(ids.JOB.new())
    return [
        ("GetOrCreateConversation", "channel", lambda st: st.GetOrCreateConversation(pb.GetOrCreateConversationRequest(user_id=ids.USER.format(ids.USER.new())), metadata=s)),
        ("GetOrCreateConversation", "user_id", lambda st: st.GetOrCreateConversation(pb.GetOrCreateConversationRequest(channel=common.CHANNEL_WEB, user_id="usr_nothex"), metadata=s)),
        ("GetOrCreateConversation", "contact_id", lambda st: st.GetOrCreateConversation(pb.GetOrCreateConversationRequest(channel=common.CHANNEL_WHATSAPP, contact_id=wrong_prefix), metadata=s)),
        ("GetOrCreateConversation", "agent_id", lambda st: st.GetOrCreateConversation(pb.GetOrCreateConversationRequest(channel=common.CHANNEL_WEB, user_id=ids.USER.format(ids.USER.new()), agent_id="agt_1"), metadata=s)),
        ("ListConversations", "page_size", lambda st: st.ListConversations(pb.ListConversationsRequest(page_size=-1), metadata=user)),
        ("ListConversations", "page_size", lambda st: st.ListConversations(pb.ListConversationsRequest(page_size=501), metadata=user)),
        ("ListConversations", "page_token", lambda st: st.ListConversations(pb.ListConversationsRequest(page_token="garbage!"), metadata=user)),
        ("GetConversation", "id", lambda st: st.GetConversation(pb.GetConversationRequest(id=""), metadata=user)),
        ("GetConversation", "id", lambda st: st.GetConversation(pb.GetConversationRequest(id=wrong_prefix), metadata=user)),
        ("CreateConversation", "title", lambda st: st.CreateConversation(pb.CreateConversationRequest(title="t" * 201), metadata=user)),
        ("CreateConversation", "title", lambda st: st.CreateConversation(pb.CreateConversationRequest(title="a\x00b"), metadata=user)),
        ("ArchiveConversation", "id", lambda st: st.ArchiveConversation(pb.ArchiveConversationRequest(id="conv_"), metadata=user)),
        ("UpdateConversationTitle", "id", lambda st: st.UpdateConversationTitle(pb.UpdateConversationTitleRequest(id=wrong_prefix, title="x"), metadata=user)),
        ("UpdateConversationTitle", "title", lambda st: st.UpdateConversationTitle(pb.UpdateConversationTitleRequest(id=conv, title="t" * 201), metadata=user)),
        ("SetConversationDoubleTexting", "id", lambda st: st.SetConversationDoubleTexting(pb.SetConversationDoubleTextingRequest(id=wrong_prefix, double_texting=pb.DOUBLE_TEXTING_REJECT), metadata=user)),
        ("SetConversationDoubleTexting", "double_texting", lambda st: st.SetConversationDoubleTexting(pb.SetConversationDoubleTextingRequest(id=conv), metadata=user)),
        ("SendMessage", "double_texting", lambda st: st.SendMessage(pb.SendMessageRequest(conversation_id=conv, content="hi", double_texting=42), metadata=user)),
        ("ListRecentConversations", "page_size", lambda st: st.ListRecentConversations(pb.ListRecentConversationsRequest(page_size=-5), metadata=user)),
        ("ListRecentConversations", "page_size", lambda st: st.ListRecentConversations(pb.ListRecentConversationsRequest(page_size=201), metadata=user)),
        ("ListRecentConversations", "page_token", lambda st: st.ListRecentConversations(pb.ListRecentConversationsRequest(page_token="e30"), metadata=user)),
        ("WatchConversationList", "page_size", lambda st: st.WatchConversationList(pb.WatchConversationListRequest(page_size=-1), metadata=user)),
        ("BatchGetConversations", "ids[1]", lambda st: st.BatchGetConversations(pb.BatchGetConversationsRequest(ids=[conv, "nope"]), metadata=s)),
        ("BatchGetConversations", "ids", lambda st: st.BatchGetConversations(pb.BatchGetConversationsRequest(ids=[conv] * 501), metadata=s)),
        ("GetConversationHistory", "conversation_id", lambda st: st.GetConversationHistory(pb.GetConversationHistoryRequest(conversation_id=msg), metadata=s)),
        ("GetConversationHistory", "max_messages", lambda st: st.GetConversationHistory(pb.GetConversationHistoryRequest(conversation_id=conv, max_messages=-1), metadata=s)),
        ("SendMessage", "conversation_id", lambda st: st.SendMessage(pb.SendMessageRequest(conversation_id="", content="hi"), metadata=user)),
        ("SendMessage", "content", lambda st: st.SendMessage(pb.SendMessageRequest(conversation_id=conv, content=""), metadata=user)),
        ("SendMessage", "content", lambda st: st.SendMessage(pb.SendMessageRequest(conversation_id=conv, content="  \n "), metadata=user)),
        ("SendMessage", "content", lambda st: st.SendMessage(pb.SendMessageRequest(conversation_id=conv, content=TOO_LONG), metadata=user)),
        ("SendMessageAsService", "conversation_id", lambda st: st.SendMessageAsService(pb.SendMessageAsServiceRequest(conversation_id=msg, content="hi"), metadata=s)),
        ("SendMessageAsService", "content", lambda st: st.SendMessageAsService(pb.SendMessageAsServiceRequest(conversation_id=conv, content=TOO_LONG), metadata=s)),
        ("SendMessageAsService", "content", lambda st: st.SendMessageAsService(pb.SendMessageAsServiceRequest(conversation_id=conv, content="nul\x00"), metadata=s)),
        ("CreateAssistantMessage", "conversation_id", lambda st: st.CreateAssistantMessage(pb.CreateAssistantMessageRequest(conversation_id="x", content="hi"), metadata=s)),
        ("CreateAssistantMessage", "content", lambda st: st.CreateAssistantMessage(pb.CreateAssistantMessageRequest(conversation_id=conv, content=""), metadata=s)),
        ("CreateAssistantMessage", "tool_calls[0].name", lambda st: st.CreateAssistantMessage(pb.CreateAssistantMessageRequest(conversation_id=conv, content="hi", tool_calls=[pb.ToolCall()]), metadata=s)),
        ("CreateAssistantMessage", "tool_calls", lambda st: st.CreateAssistantMessage(pb.CreateAssistantMessageRequest(conversation_id=conv, content="hi", tool_calls=[pb.ToolCall(name="t")] * 101), metadata=s)),
        ("CreateSystemMessage", "conversation_id", lambda st: st.CreateSystemMessage(pb.CreateSystemMessageRequest(conversation_id=msg, content="hi"), metadata=s)),
        ("CreateSystemMessage", "content", lambda st: st.CreateSystemMessage(pb.CreateSystemMessageRequest(conversation_id=conv, content=""), metadata=s)),
        ("CreateSystemMessage", "idempotency_key", lambda st: st.CreateSystemMessage(pb.CreateSystemMessageRequest(conversation_id=conv, content="hi", idempotency_key="k" * 257), metadata=s)),
        ("CreatePlaceholder", "conversation_id", lambda st: st.CreatePlaceholder(pb.CreatePlaceholderRequest(conversation_id=msg), metadata=s)),
        ("CreatePlaceholder", "job_id", lambda st: st.CreatePlaceholder(pb.CreatePlaceholderRequest(conversation_id=conv, job_id=msg), metadata=s)),
        ("FailJobPlaceholders", "job_id", lambda st: st.FailJobPlaceholders(pb.FailJobPlaceholdersRequest(job_id=""), metadata=s)),
        ("FailJobPlaceholders", "reason", lambda st: st.FailJobPlaceholders(pb.FailJobPlaceholdersRequest(job_id=job, reason="r" * 65), metadata=s)),
        ("FailJobPlaceholders", "created_before", lambda st: st.FailJobPlaceholders(pb.FailJobPlaceholdersRequest(job_id=job, created_before=Timestamp(seconds=10**13)), metadata=s)),
        ("UpdateStreamingContent", "message_id", lambda st: st.UpdateStreamingContent(pb.UpdateStreamingContentRequest(message_id=conv, content="x"), metadata=s)),
        ("UpdateStreamingContent", "content", lambda st: st.UpdateStreamingContent(pb.UpdateStreamingContentRequest(message_id=placeholder, content=TOO_LONG), metadata=s)),
        ("UpdateStreamingContent", "sequence", lambda st: st.UpdateStreamingContent(pb.UpdateStreamingContentRequest(message_id=placeholder, content="x", sequence=-1), metadata=s)),
        ("FinalizeMessage", "message_id", lambda st: st.FinalizeMessage(pb.FinalizeMessageRequest(message_id="", content="x"), metadata=s)),
        ("FinalizeMessage", "content", lambda st: st.FinalizeMessage(pb.FinalizeMessageRequest(message_id=placeholder, content=TOO_LONG), metadata=s)),
        ("FinalizeMessage", "tool_calls[1].name", lambda st: st.FinalizeMessage(pb.FinalizeMessageRequest(message_id=placeholder, content="x", tool_calls=[pb.ToolCall(name="ok"), pb.ToolCall(name=" ")]), metadata=s)),
        ("FailPlaceholder", "message_id", lambda st: st.FailPlaceholder(pb.FailPlaceholderRequest(message_id=conv), metadata=s)),
        ("MarkMessageDelivery", "message_id", lambda st: st.MarkMessageDelivery(pb.MarkMessageDeliveryRequest(message_id="msg_zz", status=pb.MESSAGE_STATUS_DELIVERED), metadata=s)),
        ("MarkMessageDelivery", "status", lambda st: st.MarkMessageDelivery(pb.MarkMessageDeliveryRequest(message_id=msg, status=pb.MESSAGE_STATUS_SENT), metadata=s)),
        ("MarkMessageDelivery", "status", lambda st: st.MarkMessageDelivery(pb.MarkMessageDeliveryRequest(message_id=msg), metadata=s)),
        ("MarkMessagesDelivery", "items", lambda st: st.MarkMessagesDelivery(pb.MarkMessagesDeliveryRequest(), metadata=s)),
        ("MarkMessagesDelivery", "items[0].message_id", lambda st: st.MarkMessagesDelivery(pb.MarkMessagesDeliveryRequest(items=[pb.MarkMessageDeliveryRequest(message_id=conv, status=pb.MESSAGE_STATUS_FAILED)]), metadata=s)),
        ("ListMessages", "conversation_id", lambda st: st.ListMessages(pb.ListMessagesRequest(conversation_id=msg), metadata=user)),
        ("ListMessages", "page_size", lambda st: st.ListMessages(pb.ListMessagesRequest(conversation_id=conv, page_size=-1), metadata=user)),
        ("ListMessages", "page_size", lambda st: st.ListMessages(pb.ListMessagesRequest(conversation_id=conv, page_size=1001), metadata=user)),
        ("GetMessage", "id", lambda st: st.GetMessage(pb.GetMessageRequest(id=conv), metadata=user)),
        ("WatchConversation", "conversation_id", lambda st: st.WatchConversation(pb.WatchConversationRequest(conversation_id="conv_x"), metadata=user)),
        ("WatchConversation", "resume_position", lambda st: st.WatchConversation(pb.WatchConversationRequest(conversation_id=conv, resume_position="%%%"), metadata=user)),
        ("WatchConversation", "resume_position", lambda st: st.WatchConversation(pb.WatchConversationRequest(conversation_id=conv, resume_position=foreign_position), metadata=user)),
        ("CheckAndRegisterInbound", "channel", lambda st: st.CheckAndRegisterInbound(pb.CheckAndRegisterInboundRequest(channel_message_id="m1"), metadata=s)),
        ("CheckAndRegisterInbound", "channel_message_id", lambda st: st.CheckAndRegisterInbound(pb.CheckAndRegisterInboundRequest(channel=common.CHANNEL_WHATSAPP), metadata=s)),
        ("CheckAndRegisterInbound", "channel_message_id", lambda st: st.CheckAndRegisterInbound(pb.CheckAndRegisterInboundRequest(channel=common.CHANNEL_WHATSAPP, channel_message_id="m" * 257), metadata=s)),
        ("CheckAndRegisterInbound", "account_id", lambda st: st.CheckAndRegisterInbound(pb.CheckAndRegisterInboundRequest(channel=common.CHANNEL_WHATSAPP, channel_message_id="m1", account_id="a" * 257), metadata=s)),
        ("CleanupInboundDedupe", "older_than", lambda st: st.CleanupInboundDedupe(pb.CleanupInboundDedupeRequest(older_than=Duration(seconds=-1)), metadata=s)),
        ("CleanupInboundDedupe", "older_than", lambda st: st.CleanupInboundDedupe(pb.CleanupInboundDedupeRequest(older_than=Duration(seconds=10_000 * 365 * 86_400)), metadata=s)),
        ("CleanupInboundDedupe", "batch_size", lambda st: st.CleanupInboundDedupe(pb.CleanupInboundDedupeRequest(batch_size=-1), metadata=s)),
        ("CleanupInboundDedupe", "batch_size", lambda st: st.CleanupInboundDedupe(pb.CleanupInboundDedupeRequest(batch_size=10_001), metadata=s)),
        ("StoreMemory", "conversation_id", lambda st: st.StoreMemory(pb.StoreMemoryRequest(conversation_id=msg, content="x", embedding=VECTOR, source=pb.MEMORY_SOURCE_MANUAL), metadata=s)),
        ("StoreMemory", "content", lambda st: st.StoreMemory(pb.StoreMemoryRequest(content="", embedding=VECTOR, source=pb.MEMORY_SOURCE_MANUAL), metadata=s)),
        ("StoreMemory", "content", lambda st: st.StoreMemory(pb.StoreMemoryRequest(content=TOO_LONG, embedding=VECTOR, source=pb.MEMORY_SOURCE_MANUAL), metadata=s)),
        ("StoreMemory", "embedding", lambda st: st.StoreMemory(pb.StoreMemoryRequest(content="x", embedding=[0.5] * 3, source=pb.MEMORY_SOURCE_MANUAL), metadata=s)),
        ("StoreMemory", "source", lambda st: st.StoreMemory(pb.StoreMemoryRequest(content="x", embedding=VECTOR), metadata=s)),
        ("SearchMemories", "embedding", lambda st: st.SearchMemories(pb.SearchMemoriesRequest(), metadata=s)),
        ("SearchMemories", "limit", lambda st: st.SearchMemories(pb.SearchMemoriesRequest(embedding=VECTOR, limit=-1), metadata=s)),
        ("SearchMemories", "limit", lambda st: st.SearchMemories(pb.SearchMemoriesRequest(embedding=VECTOR, limit=257), metadata=s)),
        ("SearchMemories", "conversation_id", lambda st: st.SearchMemories(pb.SearchMemoriesRequest(embedding=VECTOR, conversation_id="conv_1"), metadata=s)),
        ("SearchMemories", "source", lambda st: st.SearchMemories(pb.SearchMemoriesRequest(embedding=VECTOR, source=pb.MEMORY_SOURCE_UNSPECIFIED), metadata=s)),
        ("ListMemories", "conversation_id", lambda st: st.ListMemories(pb.ListMemoriesRequest(), metadata=s)),
        ("ListMemories", "page_size", lambda st: st.ListMemories(pb.ListMemoriesRequest(conversation_id=conv, page_size=-1), metadata=s)),
        ("DeleteMemory", "id", lambda st: st.DeleteMemory(pb.DeleteMemoryRequest(id=conv), metadata=s)),
    ]


async def test_bad_input_on_every_rpc_is_invalid_argument_naming_the_field_and_writes_nothing(
    messages: Running, people: People
) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    sent = await messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=w1.id, content="hi"), metadata=people.alice)
    placeholder = await messages.stub.CreatePlaceholder(pb.CreatePlaceholderRequest(conversation_id=w1.id), metadata=service())
    before = counts(messages.db)
    state = messages.db.sql("SELECT id, revision, title FROM messages.conversations")
    message_state = messages.db.sql("SELECT id, content, status, revision FROM messages.messages ORDER BY id")
    cases = bad_requests(w1.id, sent.message.id, placeholder.message.id, people.alice)
    covered = {rpc for rpc, _, _ in cases}
    every_rpc = {m.name for m in pb.DESCRIPTOR.services_by_name["MessagesService"].methods}
    assert covered == every_rpc, f"no bad-input case for {sorted(every_rpc - covered)}"
    for rpc, field, call in cases:
        error = await failure(call(messages.stub))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (rpc, field, error.details())
        assert violated_fields(error) == [field], (rpc, field, error.details())
    assert counts(messages.db) == before
    assert messages.db.sql("SELECT id, revision, title FROM messages.conversations") == state
    assert messages.db.sql("SELECT id, content, status, revision FROM messages.messages ORDER BY id") == message_state
