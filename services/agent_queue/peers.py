"""Every call this service makes to its peers: messages (conversation history, trigger
messages, failing the placeholders of ended job attempts), identity (users, contacts) and
Temporal (the scheduled tasks' workflows). Records come back as domain values (wire.py
converts them). A peer that fails during an RPC is UNAVAILABLE to our caller (retryable for
the runtime), never INTERNAL; the outbox relay classifies the answers to its handlers itself
(zenthor.errors.is_permanent)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import grpc
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from services.agent_queue import wire
from services.agent_queue.domain.context import Contact, History, User
from zenthor import ids
from zenthor.clients import Peers
from zenthor.convert import timestamp
from zenthor.errors import Unavailable
from zenthor.gen.zenthor.identity.v1 import identity_pb2
from zenthor.gen.zenthor.messages.v1 import messages_pb2
from zenthor.outbox import Handler
from zenthor.retries import TemporalClientProvider


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


# The names the per-task workflow is started and woken by (workflows/scheduled_task.py).
TASK_WORKFLOW = "ScheduledTaskWorkflow"
TASK_REFRESH_SIGNAL = "refresh"


def task_workflow_id(task_ref: str) -> str:
    """One workflow per task (`task_…`): a second start is the running one, woken."""
    return f"scheduled-task-{task_ref}"


def task_workflow_signaller(temporal: TemporalClientProvider, task_queue: str) -> Handler:
    """Outbox handler: wakes a task's workflow to re-read the task. `start`: signal-with-start
    (the workflow begins if none runs, e.g. a new or re-enabled task); otherwise only a signal,
    and no running workflow (a disabled task's ended already) is success."""

    async def signal(payload: Mapping[str, Any]) -> None:
        client = await temporal.get()
        workflow_id = task_workflow_id(payload["task_id"])
        if payload["start"]:
            await client.start_workflow(
                TASK_WORKFLOW,
                {"task_id": payload["task_id"]},
                id=workflow_id,
                task_queue=task_queue,
                start_signal=TASK_REFRESH_SIGNAL,
                # A task disabled and enabled again gets a new run under the same id.
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            )
            return
        try:
            await client.get_workflow_handle(workflow_id).signal(TASK_REFRESH_SIGNAL)
        except RPCError as e:
            if e.status != RPCStatusCode.NOT_FOUND:
                raise

    return signal


def job_placeholder_failer(peers: Peers) -> Handler:
    """Outbox handler: the open placeholders of a job attempt that ended without its reply
    (requeued, failed or cancelled) are failed by messages, or all its replies deleted for a
    rollback, idempotently (a repeat changes nothing more)."""

    async def fail(payload: Mapping[str, Any]) -> None:
        created_before = payload.get("created_before")
        await peers.messages().FailJobPlaceholders(
            messages_pb2.FailJobPlaceholdersRequest(
                job_id=payload["job_id"],
                reason=payload.get("reason") or "",
                created_before=timestamp(datetime.fromisoformat(created_before)) if created_before else None,
                # a rolled-back cancelled job's replies are deleted, not failed (docs/double-texting.md)
                discard=bool(payload.get("discard")),
            )
        )

    return fail
