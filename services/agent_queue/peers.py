"""Every call this service makes to its peers: messages (conversation history, trigger
messages, failing the placeholders of ended job attempts) and identity (users, contacts). Records come back as domain values (wire.py
converts them). A peer that fails during an RPC is UNAVAILABLE to our caller (retryable for
the runtime), never INTERNAL; the outbox relay classifies the answers to its handlers itself
(zenthor.errors.is_permanent)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import grpc

from services.agent_queue import wire
from services.agent_queue.domain.context import Contact, History, User
from zenthor import ids
from zenthor.clients import Peers
from zenthor.convert import timestamp
from zenthor.errors import Unavailable
from zenthor.gen.zenthor.identity.v1 import identity_pb2
from zenthor.gen.zenthor.messages.v1 import messages_pb2
from zenthor.outbox import Handler


def _unavailable(peer: str, error: grpc.aio.AioRpcError) -> Unavailable:
    return Unavailable(f"{peer} service: {error.code().name}")


class GrpcConversationDirectory:
    """usecases.context.ConversationDirectory over gRPC, each call with a deadline."""

    def __init__(self, peers: Peers, deadline_s: float) -> None:
        self._peers = peers
        self._deadline_s = deadline_s

    async def history(self, conversation_id: uuid.UUID, max_messages: int) -> History | None:
        request = messages_pb2.GetConversationHistoryRequest(
            conversation_id=ids.CONVERSATION.format(conversation_id), max_messages=max_messages
        )
        try:
            reply = await self._peers.messages().GetConversationHistory(request, timeout=self._deadline_s)
        except grpc.aio.AioRpcError as e:
            raise _unavailable("messages", e) from e
        if not reply.HasField("conversation"):
            return None
        return History(
            conversation=wire.conversation_of(reply.conversation),
            messages=tuple(wire.message_of(m) for m in reply.messages),
        )

    async def user(self, user_id: uuid.UUID) -> User | None:
        request = identity_pb2.BatchGetUsersRequest(ids=[ids.USER.format(user_id)])
        try:
            reply = await self._peers.identity().BatchGetUsers(request, timeout=self._deadline_s)
        except grpc.aio.AioRpcError as e:
            raise _unavailable("identity", e) from e
        return wire.user_of(reply.users[0]) if reply.users else None

    async def contact(self, contact_id: uuid.UUID) -> Contact | None:
        request = identity_pb2.BatchGetContactsRequest(ids=[ids.CONTACT.format(contact_id)])
        try:
            reply = await self._peers.identity().BatchGetContacts(request, timeout=self._deadline_s)
        except grpc.aio.AioRpcError as e:
            raise _unavailable("identity", e) from e
        return wire.contact_of(reply.contacts[0]) if reply.contacts else None


def trigger_message_sender(peers: Peers) -> Handler:
    """Outbox handler: a scheduled task's trigger message (and its job) in messages,
    idempotent by the run's key."""

    async def send(payload: Mapping[str, Any]) -> None:
        await peers.messages().CreateSystemMessage(
            messages_pb2.CreateSystemMessageRequest(
                conversation_id=payload["conversation_id"],
                content=payload["content"],
                idempotency_key=payload["idempotency_key"],
                enqueue_job=True,
            )
        )

    return send


def job_placeholder_failer(peers: Peers) -> Handler:
    """Outbox handler: the open placeholders of a job attempt that ended without its reply
    (requeued or failed) are failed by messages, idempotently (a repeat fails nothing more)."""

    async def fail(payload: Mapping[str, Any]) -> None:
        created_before = payload.get("created_before")
        await peers.messages().FailJobPlaceholders(
            messages_pb2.FailJobPlaceholdersRequest(
                job_id=payload["job_id"],
                reason=payload.get("reason") or "",
                created_before=timestamp(datetime.fromisoformat(created_before)) if created_before else None,
            )
        )

    return fail
