"""REST and SSE for the messages service's user-mode RPCs: one route per RPC, the caller's bearer
token forwarded, the reply as JSON. Authorization and ownership are the service's.

Watches are Server-Sent Events: each gRPC response is one `change` event whose `id` is the
resume position, so a browser's EventSource resumes by itself (`Last-Event-ID`) and misses
nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

import grpc
from fastapi import APIRouter, Depends, Header, Path
from pydantic import BaseModel, ConfigDict
from sse_starlette import EventSourceResponse, ServerSentEvent

from gateway.deps import AppPeers, CallMetadata
from gateway.protojson import JsonObject, message_json, optional_message_json
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb

if TYPE_CHECKING:
    from zenthor.gen.zenthor.messages.v1.messages_pb2_grpc import MessagesServiceAsyncStub

router = APIRouter(prefix="/v1", tags=["messages"])

# Comment lines keep idle streams open through proxies.
SSE_PING_S = 15


async def _messages(peers: AppPeers) -> MessagesServiceAsyncStub:
    return peers.messages()


if TYPE_CHECKING:
    MessagesStub = Annotated[MessagesServiceAsyncStub, Depends(_messages)]
else:  # the async stub's name exists only in the generated .pyi; FastAPI reads this at run time
    MessagesStub = Annotated[Any, Depends(_messages)]
# Path ids keep the RPC's field name, so an INVALID_ARGUMENT naming `id` points at them.
ConversationId = Annotated[str, Path(alias="id")]


class CreateConversationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = None


class ConversationPatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str


class SendMessageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str


# --- conversations ---


@router.get("/conversations", summary="The caller's conversations, oldest first (ListConversations)")
async def list_conversations(
    messages: MessagesStub, metadata: CallMetadata, page_size: int = 0, page_token: str = ""
) -> JsonObject:
    request = pb.ListConversationsRequest(page_size=page_size, page_token=page_token)
    return message_json(await messages.ListConversations(request, metadata=metadata))


@router.post("/conversations", summary="A new web conversation (CreateConversation)")
async def create_conversation(body: CreateConversationBody, messages: MessagesStub, metadata: CallMetadata) -> JsonObject:
    reply = await messages.CreateConversation(pb.CreateConversationRequest(title=body.title), metadata=metadata)
    return message_json(reply)


@router.get(
    "/conversations:recent",
    summary="Active conversations with their last message, most recent first (ListRecentConversations)",
)
async def list_recent_conversations(
    messages: MessagesStub, metadata: CallMetadata, page_size: int = 0, page_token: str = ""
) -> JsonObject:
    request = pb.ListRecentConversationsRequest(page_size=page_size, page_token=page_token)
    return message_json(await messages.ListRecentConversations(request, metadata=metadata))


@router.get(
    "/conversations:watch",
    summary="SSE: the recent-conversations list, again after every change (WatchConversationList)",
    response_class=EventSourceResponse,
)
async def watch_conversation_list(messages: MessagesStub, metadata: CallMetadata, page_size: int = 0) -> EventSourceResponse:
    call = messages.WatchConversationList(pb.WatchConversationListRequest(page_size=page_size), metadata=metadata)
    return await _event_stream(call, with_position=False)


@router.post(
    "/conversations/{id}:archive",
    summary="Archive an owned web conversation; null when nothing was archived (ArchiveConversation)",
)
async def archive_conversation(conversation_id: ConversationId, messages: MessagesStub, metadata: CallMetadata) -> JsonObject:
    reply = await messages.ArchiveConversation(pb.ArchiveConversationRequest(id=conversation_id), metadata=metadata)
    return {"conversation": optional_message_json(reply, "conversation")}


@router.get(
    "/conversations/{id}:watch",
    summary="SSE: current messages, then every change; resumes from Last-Event-ID (WatchConversation)",
    response_class=EventSourceResponse,
)
async def watch_conversation(
    conversation_id: ConversationId,
    messages: MessagesStub,
    metadata: CallMetadata,
    resume_position: str = "",
    last_event_id: Annotated[str, Header()] = "",
) -> EventSourceResponse:
    request = pb.WatchConversationRequest(conversation_id=conversation_id, resume_position=resume_position or last_event_id)
    return await _event_stream(messages.WatchConversation(request, metadata=metadata), with_position=True)


@router.get("/conversations/{id}", summary="An owned conversation, else null (GetConversation)")
async def get_conversation(conversation_id: ConversationId, messages: MessagesStub, metadata: CallMetadata) -> JsonObject:
    reply = await messages.GetConversation(pb.GetConversationRequest(id=conversation_id), metadata=metadata)
    return {"conversation": optional_message_json(reply, "conversation")}


@router.patch("/conversations/{id}", summary="Rename an owned conversation; null when not owned (UpdateConversationTitle)")
async def update_conversation_title(
    conversation_id: ConversationId, body: ConversationPatchBody, messages: MessagesStub, metadata: CallMetadata
) -> JsonObject:
    request = pb.UpdateConversationTitleRequest(id=conversation_id, title=body.title)
    reply = await messages.UpdateConversationTitle(request, metadata=metadata)
    return {"conversation": optional_message_json(reply, "conversation")}


# --- messages ---


@router.get("/conversations/{conversation_id}/messages", summary="Messages of an owned conversation, oldest first (ListMessages)")
async def list_messages(
    conversation_id: str, messages: MessagesStub, metadata: CallMetadata, page_size: int = 0, page_token: str = ""
) -> JsonObject:
    request = pb.ListMessagesRequest(conversation_id=conversation_id, page_size=page_size, page_token=page_token)
    return message_json(await messages.ListMessages(request, metadata=metadata))


@router.post(
    "/conversations/{conversation_id}/messages",
    summary="Send a user message (starts the agent); null when not owned (SendMessage)",
)
async def send_message(
    conversation_id: str, body: SendMessageBody, messages: MessagesStub, metadata: CallMetadata
) -> JsonObject:
    request = pb.SendMessageRequest(conversation_id=conversation_id, content=body.content)
    reply = await messages.SendMessage(request, metadata=metadata)
    return {"message": optional_message_json(reply, "message")}


@router.get("/messages/{id}", summary="A message of an owned conversation, else null (GetMessage)")
async def get_message(
    message_id: Annotated[str, Path(alias="id")], messages: MessagesStub, metadata: CallMetadata
) -> JsonObject:
    reply = await messages.GetMessage(pb.GetMessageRequest(id=message_id), metadata=metadata)
    return {"message": optional_message_json(reply, "message")}


# --- SSE ---


async def _event_stream(call: Any, *, with_position: bool) -> EventSourceResponse:
    """Reads the first response before answering, so a refused watch (auth, bad id) is a
    normal JSON error with its HTTP status rather than a broken event stream."""
    try:
        first = await call.read()
    except grpc.aio.AioRpcError:
        call.cancel()
        raise

    def event(response: Any) -> ServerSentEvent:
        return ServerSentEvent(
            data=json.dumps(message_json(response), separators=(",", ":")),
            event="change",
            id=response.position if with_position else None,
        )

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            if first is grpc.aio.EOF:
                return
            yield event(first)
            while (response := await call.read()) is not grpc.aio.EOF:
                yield event(response)
        finally:
            call.cancel()  # the client left: end the gRPC stream too

    return EventSourceResponse(events(), ping=SSE_PING_S)
