"""AgentQueueService over gRPC: requests → use cases → responses. No rules, no SQL here."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TypeAlias

import grpc

from services.agent_queue.domain import jobs as job_rules
from services.agent_queue.usecases import jobs
from services.agent_queue.usecases.deps import Deps
from services.agent_queue.usecases.pending_watch import PendingJobsBroadcast
from services.agent_queue.wire import duration, job_pb, list_page, opt
from zenthor import ids
from zenthor.auth.principal import current_principal
from zenthor.errors import InvalidArgument
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc

Ctx: TypeAlias = grpc.aio.ServicerContext

MAX_PENDING_PAGE = 1_000
DEFAULT_WATCH_JOBS = 100


def _job_ids(values: list[str], field: str) -> list[uuid.UUID]:
    if len(values) > job_rules.MAX_CLAIM:
        raise InvalidArgument(field, f"must hold at most {job_rules.MAX_CLAIM} ids")
    return [ids.JOB.parse(v, f"{field}[{i}]") for i, v in enumerate(values)]


class AgentQueueServicer(agent_queue_pb2_grpc.AgentQueueServiceServicer):
    def __init__(self, deps: Deps, pending: PendingJobsBroadcast) -> None:
        self._deps = deps
        self._pending = pending

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

    async def ListPendingJobs(self, request: pb.ListPendingJobsRequest, context: Ctx) -> pb.ListPendingJobsResponse:
        page = await jobs.list_pending_jobs(
            self._deps, list_page(request.page_size, request.page_token, max_size=MAX_PENDING_PAGE)
        )
        return pb.ListPendingJobsResponse(jobs=[job_pb(j) for j in page.items], next_page_token=page.next_page_token)

    async def WatchPendingJobs(
        self, request: pb.WatchPendingJobsRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchPendingJobsResponse]:
        max_jobs = request.max_jobs or DEFAULT_WATCH_JOBS
        if not 1 <= max_jobs <= MAX_PENDING_PAGE:
            raise InvalidArgument("max_jobs", f"must be between 1 and {MAX_PENDING_PAGE}")
        async for snapshot in self._pending.watch(max_jobs):
            yield pb.WatchPendingJobsResponse(
                jobs=[job_pb(j) for j in snapshot.claimable], pending_count=snapshot.pending_count
            )

    async def ClaimJobs(self, request: pb.ClaimJobsRequest, context: Ctx) -> pb.ClaimJobsResponse:
        claimed = await jobs.claim_jobs(
            self._deps,
            processor_id=job_rules.check_processor_id(request.processor_id),
            max_jobs=job_rules.check_max_jobs(request.max_jobs),
            lease=job_rules.check_lease(duration(request, "lease")),
            job_ids=_job_ids(list(request.job_ids), "job_ids"),
        )
        return pb.ClaimJobsResponse(jobs=[job_pb(j) for j in claimed])

    async def HeartbeatJob(self, request: pb.HeartbeatJobRequest, context: Ctx) -> pb.HeartbeatJobResponse:
        job = await jobs.heartbeat_job(
            self._deps,
            ids.JOB.parse(request.job_id, "job_id"),
            job_rules.check_processor_id(request.processor_id),
            job_rules.check_lease(duration(request, "lease")),
        )
        return pb.HeartbeatJobResponse(job=job_pb(job))

    async def CompleteJob(self, request: pb.CompleteJobRequest, context: Ctx) -> pb.CompleteJobResponse:
        job = await jobs.complete_job(
            self._deps,
            ids.JOB.parse(request.job_id, "job_id"),
            job_rules.check_processor_id(request.processor_id),
            job_rules.check_model_used(opt(request, "model_used")),
        )
        return pb.CompleteJobResponse(job=job_pb(job))

    async def FailJob(self, request: pb.FailJobRequest, context: Ctx) -> pb.FailJobResponse:
        job = await jobs.fail_job(
            self._deps,
            ids.JOB.parse(request.job_id, "job_id"),
            job_rules.check_processor_id(request.processor_id),
            job_rules.check_error_reason(opt(request, "error_reason")),
            job_rules.truncate_error_message(opt(request, "error_message")),
        )
        return pb.FailJobResponse(job=job_pb(job))

    async def RetryJob(self, request: pb.RetryJobRequest, context: Ctx) -> pb.RetryJobResponse:
        outcome = await jobs.retry_job(
            self._deps,
            ids.JOB.parse(request.job_id, "job_id"),
            job_rules.check_processor_id(request.processor_id),
            job_rules.check_error_reason(opt(request, "error_reason")),
            job_rules.truncate_error_message(opt(request, "error_message")),
        )
        return pb.RetryJobResponse(job=job_pb(outcome.job), retry_scheduled=outcome.retry_scheduled)

    async def ReleaseJob(self, request: pb.ReleaseJobRequest, context: Ctx) -> pb.ReleaseJobResponse:
        if request.attempt_count < 1:
            raise InvalidArgument("attempt_count", "must be at least 1")
        job, released = await jobs.release_job(self._deps, ids.JOB.parse(request.job_id, "job_id"), request.attempt_count)
        return pb.ReleaseJobResponse(job=job_pb(job), released=released)

    async def RequeueStaleJobs(self, request: pb.RequeueStaleJobsRequest, context: Ctx) -> pb.RequeueStaleJobsResponse:
        swept = await jobs.requeue_stale_jobs(self._deps, _batch_size(request.batch_size))
        return pb.RequeueStaleJobsResponse(requeued=swept.requeued, failed=swept.failed, more=swept.more)

    async def CleanupOldJobs(self, request: pb.CleanupOldJobsRequest, context: Ctx) -> pb.CleanupOldJobsResponse:
        older_than = duration(request, "older_than")
        if older_than is not None and older_than <= timedelta(0):
            raise InvalidArgument("older_than", "must be positive")
        cleaned = await jobs.cleanup_old_jobs(
            self._deps, older_than or job_rules.JOB_RETENTION, _batch_size(request.batch_size)
        )
        return pb.CleanupOldJobsResponse(deleted=cleaned.deleted, more=cleaned.more)

    async def IsConversationProcessing(
        self, request: pb.IsConversationProcessingRequest, context: Ctx
    ) -> pb.IsConversationProcessingResponse:
        processing = await jobs.is_conversation_processing(
            self._deps,
            current_principal().require_user(),
            ids.CONVERSATION.parse(request.conversation_id, "conversation_id"),
        )
        return pb.IsConversationProcessingResponse(processing=processing)

    async def WatchConversationProcessing(
        self, request: pb.WatchConversationProcessingRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchConversationProcessingResponse]:
        values = jobs.watch_conversation_processing(
            self._deps,
            current_principal().require_user(),
            ids.CONVERSATION.parse(request.conversation_id, "conversation_id"),
        )
        async for processing in values:
            yield pb.WatchConversationProcessingResponse(processing=processing)


def _batch_size(value: int, field: str = "batch_size") -> int:
    if value < 0 or value > jobs.MAX_SWEEP_BATCH:
        raise InvalidArgument(field, f"must be between 0 (default) and {jobs.MAX_SWEEP_BATCH}")
    return value
