"""The peers this service reads and writes over gRPC: messages (conversation history, trigger
messages) and identity (users, contacts). Every call has a deadline; a peer that is down is
UNAVAILABLE to our caller (retryable for the runtime), never INTERNAL."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import grpc

from services.agent_queue.usecases.context import ContactRecord, ConversationRecord, History
from zenthor import ids
from zenthor.clients import Peers
from zenthor.config import ServiceName
from zenthor.errors import Unavailable
from zenthor.gen.zenthor.identity.v1 import identity_pb2
from zenthor.gen.zenthor.messages.v1 import messages_pb2
from zenthor.outbox import Handler, PermanentDeliveryError

# Answers no retry can change: the event is parked (dead) for an operator.
PERMANENT_CODES = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
)


def _optional_id(kind: ids.IdKind, message: Any, field: str) -> uuid.UUID | None:
    return kind.parse(getattr(message, field), field) if message.HasField(field) else None


class GrpcConversationDirectory:
    def __init__(self, peers: Peers, deadline_s: float) -> None:
        self._peers = peers
        self._deadline_s = deadline_s

    async def history(self, conversation_id: uuid.UUID, max_messages: int) -> History | None:
        request = messages_pb2.GetConversationHistoryRequest(
            conversation_id=ids.CONVERSATION.format(conversation_id), max_messages=max_messages
        )
        reply = await self._call(ServiceName.MESSAGES, "GetConversationHistory", request)
        if not reply.HasField("conversation"):
            return None
        conversation = reply.conversation
        return History(
            conversation=ConversationRecord(
                record=conversation,
                user_id=_optional_id(ids.USER, conversation, "user_id"),
                contact_id=_optional_id(ids.CONTACT, conversation, "contact_id"),
                agent_id=_optional_id(ids.AGENT, conversation, "agent_id"),
            ),
            messages=list(reply.messages),
        )

    async def user(self, user_id: uuid.UUID) -> Any | None:
        request = identity_pb2.BatchGetUsersRequest(ids=[ids.USER.format(user_id)])
        reply = await self._call(ServiceName.IDENTITY, "BatchGetUsers", request)
        return reply.users[0] if reply.users else None

    async def contact(self, contact_id: uuid.UUID) -> ContactRecord | None:
        request = identity_pb2.BatchGetContactsRequest(ids=[ids.CONTACT.format(contact_id)])
        reply = await self._call(ServiceName.IDENTITY, "BatchGetContacts", request)
        if not reply.contacts:
            return None
        contact = reply.contacts[0]
        return ContactRecord(record=contact, user_id=_optional_id(ids.USER, contact, "user_id"))

    async def _call(self, service: ServiceName, rpc: str, request: Any) -> Any:
        try:
            return await getattr(self._peers.stub(service), rpc)(request, timeout=self._deadline_s)
        except grpc.aio.AioRpcError as e:
            raise Unavailable(f"{service.value} service: {e.code().name}") from e


def trigger_message_sender(peers: Peers) -> Handler:
    """Outbox handler: a scheduled task's trigger message (and its job) in messages,
    idempotent by the run's key."""

    async def send(payload: Mapping[str, Any]) -> None:
        request = messages_pb2.CreateSystemMessageRequest(
            conversation_id=payload["conversation_id"],
            content=payload["content"],
            idempotency_key=payload["idempotency_key"],
            enqueue_job=True,
        )
        try:
            await peers.stub(ServiceName.MESSAGES).CreateSystemMessage(request)
        except grpc.aio.AioRpcError as e:
            if e.code() in PERMANENT_CODES:
                raise PermanentDeliveryError(f"messages refused the trigger: {e.code().name}: {e.details()}") from e
            raise

    return send
