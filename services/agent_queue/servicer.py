"""AgentQueueService over gRPC: for each RPC, wire decodes the request, one use case runs,
wire builds the response. No rules, no SQL here."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.agent_queue import wire
from services.agent_queue.usecases import agents, job_events, jobs, skills, tasks
from services.agent_queue.usecases import context as conversation_context
from services.agent_queue.usecases.context import ConversationDirectory
from services.agent_queue.usecases.deps import Deps
from services.agent_queue.usecases.pending_watch import PendingJobsBroadcast
from zenthor.auth.principal import ResolvedUser, current_principal
from zenthor.convert import optional_str
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc
from zenthor.server import Ctx


class AgentQueueServicer(agent_queue_pb2_grpc.AgentQueueServiceServicer):
    def __init__(self, deps: Deps, pending: PendingJobsBroadcast, directory: ConversationDirectory) -> None:
        self._deps = deps
        self._pending = pending
        self._directory = directory

    # --- jobs ---

    async def EnqueueJob(self, request: pb.EnqueueJobRequest, context: Ctx) -> pb.EnqueueJobResponse:
        job, created = await jobs.enqueue_job(
            self._deps,
            message_id=wire.message_id(request.message_id),
            conversation_id=wire.conversation_id(request.conversation_id),
            conversation_user_id=wire.optional_user_id(request, "conversation_user_id"),
            conversation_contact_id=wire.optional_contact_id(request, "conversation_contact_id"),
        )
        return pb.EnqueueJobResponse(job=wire.job_pb(job), created=created)

    async def GetJob(self, request: pb.GetJobRequest, context: Ctx) -> pb.GetJobResponse:
        job = await jobs.get_job(self._deps, wire.job_id(request.id, "id"))
        return pb.GetJobResponse(job=wire.job_pb(job) if job else None)

    async def ListPendingJobs(self, request: pb.ListPendingJobsRequest, context: Ctx) -> pb.ListPendingJobsResponse:
        page = await jobs.list_pending_jobs(self._deps, wire.page_of(request, wire.PENDING_JOBS_PAGE))
        return pb.ListPendingJobsResponse(jobs=[wire.job_pb(j) for j in page.items], next_page_token=page.next_page_token)

    async def WatchPendingJobs(
        self, request: pb.WatchPendingJobsRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchPendingJobsResponse]:
        converted = wire.JobPbMemo()  # consecutive snapshots share most jobs: each is converted once
        async for snapshot in self._pending.watch(request.max_jobs):
            yield pb.WatchPendingJobsResponse(
                jobs=converted(snapshot.claimable),
                pending_count=snapshot.pending_count,
                cancel_requested_job_ids=wire.job_refs(snapshot.cancel_requested_of(request.processor_id)),
            )

    async def ClaimJobs(self, request: pb.ClaimJobsRequest, context: Ctx) -> pb.ClaimJobsResponse:
        outcome = await jobs.claim_jobs(
            self._deps,
            processor_id=request.processor_id,
            max_jobs=request.max_jobs,
            lease=wire.lease(request),
            job_ids=wire.job_ids(request.job_ids),
            completed=wire.completions(request.completed, "completed"),
        )
        return pb.ClaimJobsResponse(
            jobs=wire.claimed_jobs_pb(outcome.jobs, request.view), refused_job_ids=wire.job_refs(outcome.refused)
        )

    async def WorkJobs(
        self, requests: AsyncIterator[pb.WorkJobsRequest], context: Ctx
    ) -> AsyncIterator[pb.WorkJobsResponse]:
        # One ClaimJobs per message, answered in order: the same validation, acks and claim.
        async for request in requests:
            yield pb.WorkJobsResponse(claim=await self.ClaimJobs(request.claim, context))

    async def HeartbeatJob(self, request: pb.HeartbeatJobRequest, context: Ctx) -> pb.HeartbeatJobResponse:
        job = await jobs.heartbeat_job(
            self._deps,
            wire.job_id(request.job_id),
            request.processor_id,
            wire.lease(request),
        )
        return pb.HeartbeatJobResponse(job=wire.job_pb(job), cancel_requested=job.cancel_requested)

    async def CompleteJob(self, request: pb.CompleteJobRequest, context: Ctx) -> pb.CompleteJobResponse:
        job = await jobs.complete_job(
            self._deps,
            wire.job_id(request.job_id),
            request.processor_id,
            optional_str(request, "model_used"),
        )
        return pb.CompleteJobResponse(job=wire.job_pb(job))

    async def CompleteJobs(self, request: pb.CompleteJobsRequest, context: Ctx) -> pb.CompleteJobsResponse:
        refused = await jobs.complete_jobs(
            self._deps, request.processor_id, wire.completions(request.completions, "completions")
        )
        return pb.CompleteJobsResponse(refused_job_ids=wire.job_refs(refused))

    async def FailJob(self, request: pb.FailJobRequest, context: Ctx) -> pb.FailJobResponse:
        job = await jobs.fail_job(
            self._deps,
            wire.job_id(request.job_id),
            request.processor_id,
            optional_str(request, "error_reason"),
            optional_str(request, "error_message"),
        )
        return pb.FailJobResponse(job=wire.job_pb(job))

    async def RetryJob(self, request: pb.RetryJobRequest, context: Ctx) -> pb.RetryJobResponse:
        outcome = await jobs.retry_job(
            self._deps,
            wire.job_id(request.job_id),
            request.processor_id,
            optional_str(request, "error_reason"),
            optional_str(request, "error_message"),
        )
        return pb.RetryJobResponse(job=wire.job_pb(outcome.job), retry_scheduled=outcome.retry_scheduled)

    async def ReleaseJob(self, request: pb.ReleaseJobRequest, context: Ctx) -> pb.ReleaseJobResponse:
        job, released = await jobs.release_job(self._deps, wire.job_id(request.job_id), request.attempt_count)
        return pb.ReleaseJobResponse(job=wire.job_pb(job), released=released)

    async def RequeueStaleJobs(self, request: pb.RequeueStaleJobsRequest, context: Ctx) -> pb.RequeueStaleJobsResponse:
        swept = await jobs.requeue_stale_jobs(self._deps, request.batch_size)
        return pb.RequeueStaleJobsResponse(requeued=swept.requeued, failed=swept.failed, more=swept.more)

    async def CleanupOldJobs(self, request: pb.CleanupOldJobsRequest, context: Ctx) -> pb.CleanupOldJobsResponse:
        cleaned = await jobs.cleanup_old_jobs(self._deps, wire.older_than(request), request.batch_size)
        return pb.CleanupOldJobsResponse(deleted=cleaned.deleted, more=cleaned.more)

    async def AddJobEventListeners(
        self, request: pb.AddJobEventListenersRequest, context: Ctx
    ) -> pb.AddJobEventListenersResponse:
        added = await job_events.add_job_event_listeners(
            self._deps, wire.user_ids(request.user_ids, "user_ids"), request.all_registered
        )
        return pb.AddJobEventListenersResponse(added=added)

    async def CancelJob(self, request: pb.CancelJobRequest, context: Ctx) -> pb.CancelJobResponse:
        job = await jobs.cancel_job(self._deps, _user(), wire.job_id(request.job_id))
        return pb.CancelJobResponse(job=wire.job_pb(job))

    async def CancelJobAsService(
        self, request: pb.CancelJobAsServiceRequest, context: Ctx
    ) -> pb.CancelJobAsServiceResponse:
        job = await jobs.cancel_job_as_service(self._deps, wire.job_id(request.job_id), request.discard_reply)
        return pb.CancelJobAsServiceResponse(job=wire.job_pb(job))

    async def CancelConversationJobs(
        self, request: pb.CancelConversationJobsRequest, context: Ctx
    ) -> pb.CancelConversationJobsResponse:
        cancelled = await jobs.cancel_conversation_jobs(self._deps, wire.conversation_cancel(request))
        return pb.CancelConversationJobsResponse(jobs=[wire.job_pb(j) for j in cancelled])

    async def ListActiveJobs(self, request: pb.ListActiveJobsRequest, context: Ctx) -> pb.ListActiveJobsResponse:
        active = await jobs.list_active_jobs(self._deps, wire.conversation_id(request.conversation_id))
        return pb.ListActiveJobsResponse(jobs=[wire.job_pb(j) for j in active])

    async def IsConversationProcessing(
        self, request: pb.IsConversationProcessingRequest, context: Ctx
    ) -> pb.IsConversationProcessingResponse:
        processing, active = await jobs.is_conversation_processing(
            self._deps,
            _user(),
            wire.conversation_id(request.conversation_id),
        )
        return pb.IsConversationProcessingResponse(processing=processing, active_job_ids=wire.job_refs(active))

    async def WatchConversationProcessing(
        self, request: pb.WatchConversationProcessingRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchConversationProcessingResponse]:
        values = jobs.watch_conversation_processing(
            self._deps,
            _user(),
            wire.conversation_id(request.conversation_id),
        )
        async for processing in values:
            yield pb.WatchConversationProcessingResponse(processing=processing)

    async def GetConversationContext(
        self, request: pb.GetConversationContextRequest, context: Ctx
    ) -> pb.GetConversationContextResponse:
        found = await conversation_context.get_conversation_context(
            self._deps,
            self._directory,
            wire.conversation_id(request.conversation_id),
            request.max_messages,
        )
        return wire.context_response(found)

    # --- agents (admin) ---

    async def ListAgents(self, request: pb.ListAgentsRequest, context: Ctx) -> pb.ListAgentsResponse:
        page = await agents.list_agents(self._deps, wire.page_of(request, wire.AGENTS_PAGE))
        return pb.ListAgentsResponse(agents=[wire.agent_pb(a) for a in page.items], next_page_token=page.next_page_token)

    async def GetAgent(self, request: pb.GetAgentRequest, context: Ctx) -> pb.GetAgentResponse:
        agent = await agents.get_agent(self._deps, wire.agent_id(request.id))
        return pb.GetAgentResponse(agent=wire.agent_pb(agent) if agent else None)

    async def GetDefaultAgent(self, request: pb.GetDefaultAgentRequest, context: Ctx) -> pb.GetDefaultAgentResponse:
        agent = await agents.get_default_agent(self._deps)
        return pb.GetDefaultAgentResponse(agent=wire.agent_pb(agent) if agent else None)

    async def GetAgentByName(self, request: pb.GetAgentByNameRequest, context: Ctx) -> pb.GetAgentByNameResponse:
        agent = await agents.get_agent_by_name(self._deps, request.name)
        return pb.GetAgentByNameResponse(agent=wire.agent_pb(agent) if agent else None)

    async def CreateAgent(self, request: pb.CreateAgentRequest, context: Ctx) -> pb.CreateAgentResponse:
        agent = await agents.create_agent(self._deps, wire.new_agent_fields(request))
        return pb.CreateAgentResponse(agent=wire.agent_pb(agent))

    async def UpdateAgent(self, request: pb.UpdateAgentRequest, context: Ctx) -> pb.UpdateAgentResponse:
        agent = await agents.update_agent(self._deps, wire.agent_id(request.id), wire.agent_changes(request))
        return pb.UpdateAgentResponse(agent=wire.agent_pb(agent))

    async def DeleteAgent(self, request: pb.DeleteAgentRequest, context: Ctx) -> pb.DeleteAgentResponse:
        await agents.delete_agent(self._deps, wire.agent_id(request.id))
        return pb.DeleteAgentResponse()

    # --- skills (owner-scoped: docs/hardening.md #31) ---

    async def ListSkills(self, request: pb.ListSkillsRequest, context: Ctx) -> pb.ListSkillsResponse:
        page = await skills.list_skills(
            self._deps, _user(), wire.page_of(request, wire.SKILLS_PAGE), request.all_owners
        )
        return pb.ListSkillsResponse(skills=[wire.skill_pb(s) for s in page.items], next_page_token=page.next_page_token)

    async def GetSkillByName(self, request: pb.GetSkillByNameRequest, context: Ctx) -> pb.GetSkillByNameResponse:
        skill = await skills.get_skill_by_name(self._deps, _user(), request.name)
        return pb.GetSkillByNameResponse(skill=wire.skill_pb(skill) if skill else None)

    async def CreateSkill(self, request: pb.CreateSkillRequest, context: Ctx) -> pb.CreateSkillResponse:
        skill = await skills.create_skill(self._deps, _user(), wire.new_skill_fields(request))
        return pb.CreateSkillResponse(skill=wire.skill_pb(skill))

    async def ToggleSkill(self, request: pb.ToggleSkillRequest, context: Ctx) -> pb.ToggleSkillResponse:
        skill = await skills.toggle_skill(self._deps, _user(), wire.skill_id(request.id))
        return pb.ToggleSkillResponse(skill=wire.skill_pb(skill) if skill else None)

    async def UpdateSkill(self, request: pb.UpdateSkillRequest, context: Ctx) -> pb.UpdateSkillResponse:
        skill = await skills.update_skill(
            self._deps, _user(), wire.skill_id(request.id), wire.skill_changes(request)
        )
        return pb.UpdateSkillResponse(skill=wire.skill_pb(skill) if skill else None)

    async def DeleteSkill(self, request: pb.DeleteSkillRequest, context: Ctx) -> pb.DeleteSkillResponse:
        deleted = await skills.delete_skill(self._deps, _user(), wire.skill_id(request.id))
        return pb.DeleteSkillResponse(deleted=deleted)

    async def SeedRecommendedSkills(
        self, request: pb.SeedRecommendedSkillsRequest, context: Ctx
    ) -> pb.SeedRecommendedSkillsResponse:
        counts = await skills.seed_recommended_skills(self._deps, _user())
        return pb.SeedRecommendedSkillsResponse(created=counts.created, existing=counts.existing, total=counts.total)

    async def ClaimLegacySkills(self, request: pb.ClaimLegacySkillsRequest, context: Ctx) -> pb.ClaimLegacySkillsResponse:
        return pb.ClaimLegacySkillsResponse(adopted=await skills.claim_legacy_skills(self._deps, _user()))

    async def BackfillSkillOwners(
        self, request: pb.BackfillSkillOwnersRequest, context: Ctx
    ) -> pb.BackfillSkillOwnersResponse:
        counts = await skills.backfill_skill_owners(self._deps, wire.user_id(request.owner_user_id, "owner_user_id"))
        return pb.BackfillSkillOwnersResponse(updated=counts.updated, total=counts.total)

    # --- scheduled tasks ---

    async def ListScheduledTasks(
        self, request: pb.ListScheduledTasksRequest, context: Ctx
    ) -> pb.ListScheduledTasksResponse:
        page = await tasks.list_tasks(self._deps, wire.page_of(request, wire.TASKS_PAGE))
        return pb.ListScheduledTasksResponse(tasks=[wire.task_pb(t) for t in page.items], next_page_token=page.next_page_token)

    async def GetScheduledTask(self, request: pb.GetScheduledTaskRequest, context: Ctx) -> pb.GetScheduledTaskResponse:
        task = await tasks.get_task(self._deps, wire.task_id(request.id))
        return pb.GetScheduledTaskResponse(task=wire.task_pb(task) if task else None)

    async def CreateScheduledTask(
        self, request: pb.CreateScheduledTaskRequest, context: Ctx
    ) -> pb.CreateScheduledTaskResponse:
        task = await tasks.create_task(self._deps, wire.new_task_fields(request))
        return pb.CreateScheduledTaskResponse(task=wire.task_pb(task))

    async def UpdateScheduledTask(
        self, request: pb.UpdateScheduledTaskRequest, context: Ctx
    ) -> pb.UpdateScheduledTaskResponse:
        task = await tasks.update_task(
            self._deps, wire.task_id(request.id), wire.task_changes(request)
        )
        return pb.UpdateScheduledTaskResponse(task=wire.task_pb(task) if task else None)

    async def DeleteScheduledTask(
        self, request: pb.DeleteScheduledTaskRequest, context: Ctx
    ) -> pb.DeleteScheduledTaskResponse:
        await tasks.delete_task(self._deps, wire.task_id(request.id))
        return pb.DeleteScheduledTaskResponse()

    async def ProcessDueScheduledTasks(
        self, request: pb.ProcessDueScheduledTasksRequest, context: Ctx
    ) -> pb.ProcessDueScheduledTasksResponse:
        swept = await tasks.process_due_tasks(self._deps, request.batch_size)
        return pb.ProcessDueScheduledTasksResponse(fired=swept.fired, advanced=swept.advanced, more=swept.more)

    async def GetScheduledTaskNextRun(
        self, request: pb.GetScheduledTaskNextRunRequest, context: Ctx
    ) -> pb.GetScheduledTaskNextRunResponse:
        task = await tasks.get_task_next_run(self._deps, wire.task_id(request.id))
        return pb.GetScheduledTaskNextRunResponse(task=wire.task_pb(task))

    async def FireScheduledTask(self, request: pb.FireScheduledTaskRequest, context: Ctx) -> pb.FireScheduledTaskResponse:
        run = await tasks.fire_task(self._deps, wire.task_id(request.id), wire.run_time(request))
        return pb.FireScheduledTaskResponse(fired=run.fired, task=wire.task_pb(run.task))


def _user() -> ResolvedUser:
    return current_principal().require_user()
