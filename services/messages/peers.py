"""The peers the messages service calls: agent_queue, through the outbox only. Each handler
calls an idempotent RPC keyed by the event's natural key, so a repeated delivery has one
effect; a permanent answer is parked by the relay itself (docs/architecture.md §7)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.messages.usecases.deps import ENQUEUE_JOB_TOPIC
from zenthor.clients import Peers
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as agent_queue
from zenthor.outbox import Handler


def outbox_handlers(peers: Peers) -> Mapping[str, Handler]:
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

    return {ENQUEUE_JOB_TOPIC: enqueue_job}
