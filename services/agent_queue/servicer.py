"""AgentQueueService over gRPC: requests → use cases → responses. No rules, no SQL here."""

from __future__ import annotations

from typing import TypeAlias

import grpc

from services.agent_queue.usecases import jobs
from services.agent_queue.usecases.deps import Deps
from services.agent_queue.wire import job_pb, opt
from zenthor import ids
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc

Ctx: TypeAlias = grpc.aio.ServicerContext


class AgentQueueServicer(agent_queue_pb2_grpc.AgentQueueServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    # --- jobs ---

    async def EnqueueJob(self, request: pb.EnqueueJobRequest, context: Ctx) -> pb.EnqueueJobResponse:
        job, created = await jobs.enqueue_job(
            self._deps,
            message_id=ids.MESSAGE.parse(request.message_id, "message_id"),
            conversation_id=ids.CONVERSATION.parse(request.conversation_id, "conversation_id"),
            conversation_user_id=ids.USER.parse_optional(opt(request, "conversation_user_id"), "conversation_user_id"),
            conversation_contact_id=ids.CONTACT.parse_optional(
                opt(request, "conversation_contact_id"), "conversation_contact_id"
            ),
        )
        return pb.EnqueueJobResponse(job=job_pb(job), created=created)

    async def GetJob(self, request: pb.GetJobRequest, context: Ctx) -> pb.GetJobResponse:
        job = await jobs.get_job(self._deps, ids.JOB.parse(request.id, "id"))
        return pb.GetJobResponse(job=job_pb(job) if job else None)
