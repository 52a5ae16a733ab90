"""MessagesService over gRPC: request → wire → one use case → wire → response. No rules, no
SQL, no error handling here (docs/architecture.md §2)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.messages import wire
from services.messages.usecases import conversations, dedupe, memories, messages, watch
from services.messages.usecases.deps import Deps
from zenthor.auth.principal import ResolvedUser, current_principal
from zenthor.convert import timestamp
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc
from zenthor.server import Ctx


def _user() -> ResolvedUser:
    return current_principal().require_user()


class MessagesServicer(messages_pb2_grpc.MessagesServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    # --- conversations ---

    async def GetOrCreateConversation(
        self, request: pb.GetOrCreateConversationRequest, context: Ctx
    ) -> pb.GetOrCreateConversationResponse:
        result = await conversations.get_or_create_conversation(
            self._deps,
            wire.channel(request.channel),
            wire.optional_user_id(request),
            wire.optional_contact_id(request),
            wire.optional_agent_id(request),
        )
        return pb.GetOrCreateConversationResponse(conversation=wire.conversation_pb(result.conversation), created=result.created)

    async def ListConversations(self, request: pb.ListConversationsRequest, context: Ctx) -> pb.ListConversationsResponse:
        page = await conversations.list_conversations(self._deps, _user(), wire.conversations_page(request))
        return pb.ListConversationsResponse(
            conversations=[wire.conversation_pb(c) for c in page.items], next_page_token=page.next_page_token
        )

    async def GetConversation(self, request: pb.GetConversationRequest, context: Ctx) -> pb.GetConversationResponse:
        conversation = await conversations.get_conversation(self._deps, _user(), wire.conversation_id(request.id, "id"))
        return pb.GetConversationResponse(conversation=wire.optional_conversation_pb(conversation))

    async def CreateConversation(self, request: pb.CreateConversationRequest, context: Ctx) -> pb.CreateConversationResponse:
        conversation = await conversations.create_conversation(self._deps, _user(), wire.optional_title(request))
        return pb.CreateConversationResponse(conversation=wire.conversation_pb(conversation))

    async def ArchiveConversation(self, request: pb.ArchiveConversationRequest, context: Ctx) -> pb.ArchiveConversationResponse:
        conversation = await conversations.archive_conversation(self._deps, _user(), wire.conversation_id(request.id, "id"))
        return pb.ArchiveConversationResponse(conversation=wire.optional_conversation_pb(conversation))

    async def SetConversationDoubleTexting(
        self, request: pb.SetConversationDoubleTextingRequest, context: Ctx
    ) -> pb.SetConversationDoubleTextingResponse:
        conversation = await conversations.set_conversation_double_texting(
            self._deps, _user(), wire.conversation_id(request.id, "id"), wire.double_texting(request.double_texting)
        )
        return pb.SetConversationDoubleTextingResponse(conversation=wire.optional_conversation_pb(conversation))

    async def UpdateConversationTitle(
        self, request: pb.UpdateConversationTitleRequest, context: Ctx
    ) -> pb.UpdateConversationTitleResponse:
        conversation = await conversations.update_conversation_title(
            self._deps, _user(), wire.conversation_id(request.id, "id"), request.title
        )
        return pb.UpdateConversationTitleResponse(conversation=wire.optional_conversation_pb(conversation))

    async def ListRecentConversations(
        self, request: pb.ListRecentConversationsRequest, context: Ctx
    ) -> pb.ListRecentConversationsResponse:
        page = await conversations.list_recent_conversations(
            self._deps, _user(), wire.recent_page(request)
        )
        return pb.ListRecentConversationsResponse(
            conversations=[wire.recent_pb(r) for r in page.items], next_page_token=page.next_page_token
        )

    async def WatchConversationList(
        self, request: pb.WatchConversationListRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchConversationListResponse]:
        async for snapshot in watch.watch_conversation_list(self._deps, _user(), wire.watched_list_size(request)):
            yield pb.WatchConversationListResponse(
                conversations=[wire.recent_pb(r) for r in snapshot.conversations],
                snapshot_time=timestamp(snapshot.taken_at),
            )

    async def BatchGetConversations(
        self, request: pb.BatchGetConversationsRequest, context: Ctx
    ) -> pb.BatchGetConversationsResponse:
        found = await conversations.batch_get_conversations(self._deps, wire.conversation_ids(request.ids))
        return pb.BatchGetConversationsResponse(conversations=[wire.conversation_pb(c) for c in found])

    async def GetConversationHistory(
        self, request: pb.GetConversationHistoryRequest, context: Ctx
    ) -> pb.GetConversationHistoryResponse:
        history = await conversations.get_conversation_history(
            self._deps, wire.conversation_id(request.conversation_id), request.max_messages
        )
        return pb.GetConversationHistoryResponse(
            conversation=wire.optional_conversation_pb(history.conversation),
            messages=[wire.message_pb(m) for m in history.messages],
        )

    # --- messages ---

    async def SendMessage(self, request: pb.SendMessageRequest, context: Ctx) -> pb.SendMessageResponse:
        message = await messages.send_message(
            self._deps,
            _user(),
            wire.conversation_id(request.conversation_id),
            request.content,
            wire.double_texting(request.double_texting),
        )
        return pb.SendMessageResponse(message=wire.optional_message_pb(message))

    async def SendMessageAsService(
        self, request: pb.SendMessageAsServiceRequest, context: Ctx
    ) -> pb.SendMessageAsServiceResponse:
        message = await messages.send_message_as_service(
            self._deps, wire.conversation_id(request.conversation_id), request.content
        )
        return pb.SendMessageAsServiceResponse(message=wire.message_pb(message))

    async def CreateAssistantMessage(
        self, request: pb.CreateAssistantMessageRequest, context: Ctx
    ) -> pb.CreateAssistantMessageResponse:
        message = await messages.create_assistant_message(
            self._deps,
            wire.conversation_id(request.conversation_id),
            request.content,
            wire.tool_calls(request.tool_calls),
        )
        return pb.CreateAssistantMessageResponse(message=wire.message_pb(message))

    async def CreateSystemMessage(self, request: pb.CreateSystemMessageRequest, context: Ctx) -> pb.CreateSystemMessageResponse:
        result = await messages.create_system_message(
            self._deps,
            wire.conversation_id(request.conversation_id),
            request.content,
            request.idempotency_key,
            request.enqueue_job,
        )
        return pb.CreateSystemMessageResponse(message=wire.message_pb(result.message), created=result.created)

    async def CreatePlaceholder(self, request: pb.CreatePlaceholderRequest, context: Ctx) -> pb.CreatePlaceholderResponse:
        message = await messages.create_placeholder(
            self._deps, wire.conversation_id(request.conversation_id), wire.optional_job_id(request)
        )
        return pb.CreatePlaceholderResponse(message=wire.message_pb(message))

    async def UpdateStreamingContent(
        self, request: pb.UpdateStreamingContentRequest, context: Ctx
    ) -> pb.UpdateStreamingContentResponse:
        applied = await messages.update_streaming_content(
            self._deps, wire.message_id(request.message_id), request.content, request.sequence
        )
        return pb.UpdateStreamingContentResponse(applied=applied)

    async def FinalizeMessage(self, request: pb.FinalizeMessageRequest, context: Ctx) -> pb.FinalizeMessageResponse:
        message = await messages.finalize_message(
            self._deps, wire.message_id(request.message_id), request.content, wire.tool_calls(request.tool_calls)
        )
        return pb.FinalizeMessageResponse(message=wire.message_pb(message))

    async def FailPlaceholder(self, request: pb.FailPlaceholderRequest, context: Ctx) -> pb.FailPlaceholderResponse:
        message = await messages.fail_placeholder(self._deps, wire.message_id(request.message_id))
        return pb.FailPlaceholderResponse(message=wire.message_pb(message))

    async def FailJobPlaceholders(
        self, request: pb.FailJobPlaceholdersRequest, context: Ctx
    ) -> pb.FailJobPlaceholdersResponse:
        replies = await messages.fail_job_placeholders(
            self._deps, wire.job_id(request.job_id), request.reason, wire.created_before(request), request.discard
        )
        return pb.FailJobPlaceholdersResponse(
            messages=[wire.message_pb(m) for m in replies.failed], removed_message_ids=wire.message_refs(replies.removed)
        )

    async def MarkMessageDelivery(self, request: pb.MarkMessageDeliveryRequest, context: Ctx) -> pb.MarkMessageDeliveryResponse:
        message = await messages.mark_message_delivery(
            self._deps, wire.message_id(request.message_id), wire.delivery_outcome(request.status)
        )
        return pb.MarkMessageDeliveryResponse(message=wire.message_pb(message))

    async def MarkMessagesDelivery(
        self, request: pb.MarkMessagesDeliveryRequest, context: Ctx
    ) -> pb.MarkMessagesDeliveryResponse:
        marks = await messages.mark_messages_delivery(self._deps, wire.delivery_reports(request))
        return pb.MarkMessagesDeliveryResponse(results=[wire.delivery_mark_pb(m) for m in marks])

    async def ListMessages(self, request: pb.ListMessagesRequest, context: Ctx) -> pb.ListMessagesResponse:
        page = await messages.list_messages(
            self._deps, _user(), wire.conversation_id(request.conversation_id), wire.messages_page(request)
        )
        return pb.ListMessagesResponse(messages=[wire.message_pb(m) for m in page.items], next_page_token=page.next_page_token)

    async def GetMessage(self, request: pb.GetMessageRequest, context: Ctx) -> pb.GetMessageResponse:
        message = await messages.get_message(self._deps, _user(), wire.message_id(request.id, "id"))
        return pb.GetMessageResponse(message=wire.optional_message_pb(message))

    async def WatchConversation(
        self, request: pb.WatchConversationRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchConversationResponse]:
        conversation_id = wire.conversation_id(request.conversation_id)
        resume = wire.resume_position(request, conversation_id)
        async for changes in watch.watch_conversation(self._deps, _user(), conversation_id, resume):
            yield pb.WatchConversationResponse(
                messages=[wire.message_pb(m) for m in changes.messages],
                conversation=wire.optional_conversation_pb(changes.conversation),
                position=changes.position.encode(),
                caught_up=changes.caught_up,
                removed_message_ids=wire.message_refs(changes.removed),
            )

    # --- inbound dedupe ---

    async def CheckAndRegisterInbound(
        self, request: pb.CheckAndRegisterInboundRequest, context: Ctx
    ) -> pb.CheckAndRegisterInboundResponse:
        duplicate = await dedupe.check_and_register_inbound(
            self._deps, wire.channel(request.channel), request.channel_message_id, request.account_id
        )
        return pb.CheckAndRegisterInboundResponse(is_duplicate=duplicate)

    async def CleanupInboundDedupe(
        self, request: pb.CleanupInboundDedupeRequest, context: Ctx
    ) -> pb.CleanupInboundDedupeResponse:
        deleted, more = await dedupe.cleanup_inbound_dedupe(self._deps, wire.older_than(request), request.batch_size)
        return pb.CleanupInboundDedupeResponse(deleted=deleted, more=more)

    # --- memories ---

    async def StoreMemory(self, request: pb.StoreMemoryRequest, context: Ctx) -> pb.StoreMemoryResponse:
        memory = await memories.store_memory(
            self._deps,
            wire.optional_conversation_id(request),
            request.content,
            request.embedding,
            wire.memory_source(request.source),
        )
        return pb.StoreMemoryResponse(memory=wire.memory_pb(memory))

    async def SearchMemories(self, request: pb.SearchMemoriesRequest, context: Ctx) -> pb.SearchMemoriesResponse:
        hits = await memories.search_memories(
            self._deps,
            request.embedding,
            request.limit,
            wire.optional_conversation_id(request),
            wire.optional_memory_source(request),
        )
        return pb.SearchMemoriesResponse(hits=[wire.hit_pb(h) for h in hits])

    async def ListMemories(self, request: pb.ListMemoriesRequest, context: Ctx) -> pb.ListMemoriesResponse:
        page = await memories.list_memories(
            self._deps,
            wire.conversation_id(request.conversation_id),
            wire.memories_page(request),
            request.include_embeddings,
        )
        return pb.ListMemoriesResponse(memories=[wire.memory_pb(m) for m in page.items], next_page_token=page.next_page_token)

    async def DeleteMemory(self, request: pb.DeleteMemoryRequest, context: Ctx) -> pb.DeleteMemoryResponse:
        deleted = await memories.delete_memory(self._deps, wire.memory_id(request.id))
        return pb.DeleteMemoryResponse(deleted=deleted)
