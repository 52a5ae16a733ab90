"""The peers the messages service calls: agent_queue, through the outbox (jobs and their
cancellation), and once synchronously (whether a conversation's agent is busy, for a
double-texting `reject` send). Each outbox handler calls an idempotent RPC keyed by the event's
natural key, so a repeated delivery has one effect; a permanent answer is parked by the relay
itself (docs/architecture.md §7)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import grpc

from services.messages.usecases.deps import CANCEL_JOBS_TOPIC, ENQUEUE_JOB_TOPIC
from zenthor import ids
from zenthor.clients import Peers
from zenthor.errors import Unavailable
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as agent_queue
from zenthor.outbox import TopicHandler
from zenthor.webhooks import WEBHOOK_EVENT_TOPIC, webhook_event_handler


def outbox_handlers(peers: Peers) -> Mapping[str, TopicHandler]:
    async def enqueue_job(payload: Mapping[str, Any]) -> None:
        # agent_queue keys the job by message id: a repeated delivery returns the same job.
        await peers.agent_queue().EnqueueJob(
            agent_queue.EnqueueJobRequest(
                message_id=payload["message_id"],
                conversation_id=payload["conversation_id"],
                conversation_user_id=payload.get("conversation_user_id"),
                conversation_contact_id=payload.get("conversation_contact_id"),
            )
        )

    async def cancel_conversation_jobs(payload: Mapping[str, Any]) -> None:
        # Idempotent: a repeat finds the jobs already cancelled and changes nothing.
        await peers.agent_queue().CancelConversationJobs(
            agent_queue.CancelConversationJobsRequest(
                conversation_id=payload["conversation_id"],
                before_message_id=payload["before_message_id"],
                message_ids=payload["message_ids"],
                conversation_user_id=payload.get("conversation_user_id"),
                conversation_contact_id=payload.get("conversation_contact_id"),
                discard_reply=payload["discard_reply"],
            )
        )

    return {
        ENQUEUE_JOB_TOPIC: enqueue_job,
        CANCEL_JOBS_TOPIC: cancel_conversation_jobs,
        # message.created (docs/webhooks.md) to delivery's idempotent PublishWebhookEvents (a batch per call).
        WEBHOOK_EVENT_TOPIC: webhook_event_handler(peers),
    }


class GrpcActiveJobs:
    """usecases.deps.ActiveJobs over agent_queue's ListActiveJobs, with a deadline. A peer that
    cannot answer makes the send UNAVAILABLE (the caller may retry), never INTERNAL."""

    def __init__(self, peers: Peers, deadline_s: float) -> None:
        self._peers = peers
        self._deadline_s = deadline_s

    async def any_active(self, conversation_id: uuid.UUID) -> bool:
        request = agent_queue.ListActiveJobsRequest(conversation_id=ids.CONVERSATION.format(conversation_id))
        try:
            reply = await self._peers.agent_queue().ListActiveJobs(request, timeout=self._deadline_s)
        except grpc.aio.AioRpcError as e:
            raise Unavailable(f"agent_queue service: {e.code().name}") from e
        return len(reply.jobs) > 0
