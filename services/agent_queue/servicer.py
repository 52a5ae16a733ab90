"""AgentQueueService over gRPC: requests → use cases → responses. No rules, no SQL here."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TypeAlias

import grpc

from services.agent_queue.domain import jobs as job_rules
from services.agent_queue.domain.agents import MAX_AGENT_NAME, AgentFields
from services.agent_queue.domain.skills import MAX_SKILL_NAME, SkillFields
from services.agent_queue.domain.tasks import MAX_PAYLOAD, MAX_TASK_NAME, TaskFields
from services.agent_queue.usecases import agents, jobs, skills, tasks
from services.agent_queue.usecases import context as conversation_context
from services.agent_queue.usecases.context import ConversationDirectory
from services.agent_queue.usecases.deps import Deps
from services.agent_queue.usecases.pending_watch import PendingJobsBroadcast
from services.agent_queue.wire import (
    agent_pb,
    config_of,
    duration,
    job_pb,
    list_page,
    opt,
    policy_of,
    skill_pb,
    task_pb,
)
from zenthor import ids
from zenthor.auth.principal import ResolvedUser, current_principal
from zenthor.errors import InvalidArgument
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc
from zenthor.pagination import page_request
from zenthor.validate import required_text

Ctx: TypeAlias = grpc.aio.ServicerContext

MAX_PENDING_PAGE = 1_000
DEFAULT_WATCH_JOBS = 100


def _job_ids(values: list[str], field: str) -> list[uuid.UUID]:
    if len(values) > job_rules.MAX_CLAIM:
        raise InvalidArgument(field, f"must hold at most {job_rules.MAX_CLAIM} ids")
    return [ids.JOB.parse(v, f"{field}[{i}]") for i, v in enumerate(values)]


class AgentQueueServicer(agent_queue_pb2_grpc.AgentQueueServiceServicer):
    def __init__(self, deps: Deps, pending: PendingJobsBroadcast, directory: ConversationDirectory) -> None:
        self._deps = deps
        self._pending = pending
        self._directory = directory

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
            _user(),
            ids.CONVERSATION.parse(request.conversation_id, "conversation_id"),
        )
        return pb.IsConversationProcessingResponse(processing=processing)

    async def WatchConversationProcessing(
        self, request: pb.WatchConversationProcessingRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchConversationProcessingResponse]:
        values = jobs.watch_conversation_processing(
            self._deps,
            _user(),
            ids.CONVERSATION.parse(request.conversation_id, "conversation_id"),
        )
        async for processing in values:
            yield pb.WatchConversationProcessingResponse(processing=processing)


    async def GetConversationContext(
        self, request: pb.GetConversationContextRequest, context: Ctx
    ) -> pb.GetConversationContextResponse:
        if request.max_messages < 0:
            raise InvalidArgument("max_messages", "must not be negative (0 means all)")
        found = await conversation_context.get_conversation_context(
            self._deps,
            self._directory,
            ids.CONVERSATION.parse(request.conversation_id, "conversation_id"),
            request.max_messages,
        )
        if found is None:
            return pb.GetConversationContextResponse()
        return pb.GetConversationContextResponse(
            context=pb.ConversationContext(
                conversation=found.conversation,
                user=found.user,
                contact=found.contact,
                messages=found.messages,
                skills=[skill_pb(s) for s in found.skills],
                agent=agent_pb(found.agent) if found.agent else None,
            )
        )

    # --- agents (admin) ---

    async def ListAgents(self, request: pb.ListAgentsRequest, context: Ctx) -> pb.ListAgentsResponse:
        page = await agents.list_agents(self._deps, page_request(request.page_size, request.page_token))
        return pb.ListAgentsResponse(agents=[agent_pb(a) for a in page.items], next_page_token=page.next_page_token)

    async def GetAgent(self, request: pb.GetAgentRequest, context: Ctx) -> pb.GetAgentResponse:
        agent = await agents.get_agent(self._deps, ids.AGENT.parse(request.id, "id"))
        return pb.GetAgentResponse(agent=agent_pb(agent) if agent else None)

    async def GetDefaultAgent(self, request: pb.GetDefaultAgentRequest, context: Ctx) -> pb.GetDefaultAgentResponse:
        agent = await agents.get_default_agent(self._deps)
        return pb.GetDefaultAgentResponse(agent=agent_pb(agent) if agent else None)

    async def GetAgentByName(self, request: pb.GetAgentByNameRequest, context: Ctx) -> pb.GetAgentByNameResponse:
        agent = await agents.get_agent_by_name(self._deps, required_text(request.name, "name", max_chars=MAX_AGENT_NAME))
        return pb.GetAgentByNameResponse(agent=agent_pb(agent) if agent else None)

    async def CreateAgent(self, request: pb.CreateAgentRequest, context: Ctx) -> pb.CreateAgentResponse:
        agent = await agents.create_agent(
            self._deps,
            AgentFields(
                name=required_text(request.name, "name", max_chars=MAX_AGENT_NAME),
                description=request.description,
                system_prompt=request.system_prompt,
                model=opt(request, "model"),
                fallback_model=opt(request, "fallback_model"),
                enabled=request.enabled,
                tool_policy=policy_of(opt(request, "tool_policy")),
            ),
        )
        return pb.CreateAgentResponse(agent=agent_pb(agent))

    async def UpdateAgent(self, request: pb.UpdateAgentRequest, context: Ctx) -> pb.UpdateAgentResponse:
        agent = await agents.update_agent(
            self._deps,
            ids.AGENT.parse(request.id, "id"),
            AgentFields(
                name=opt(request, "name"),
                description=opt(request, "description"),
                system_prompt=opt(request, "system_prompt"),
                model=opt(request, "model"),
                fallback_model=opt(request, "fallback_model"),
                enabled=opt(request, "enabled"),
                tool_policy=policy_of(opt(request, "tool_policy")),
            ),
        )
        return pb.UpdateAgentResponse(agent=agent_pb(agent))

    async def DeleteAgent(self, request: pb.DeleteAgentRequest, context: Ctx) -> pb.DeleteAgentResponse:
        await agents.delete_agent(self._deps, ids.AGENT.parse(request.id, "id"))
        return pb.DeleteAgentResponse()

    # --- skills (owner-scoped, finding 31) ---

    async def ListSkills(self, request: pb.ListSkillsRequest, context: Ctx) -> pb.ListSkillsResponse:
        page = await skills.list_skills(
            self._deps, _user(), page_request(request.page_size, request.page_token), request.all_owners
        )
        return pb.ListSkillsResponse(skills=[skill_pb(s) for s in page.items], next_page_token=page.next_page_token)

    async def GetSkillByName(self, request: pb.GetSkillByNameRequest, context: Ctx) -> pb.GetSkillByNameResponse:
        skill = await skills.get_skill_by_name(
            self._deps, _user(), required_text(request.name, "name", max_chars=MAX_SKILL_NAME)
        )
        return pb.GetSkillByNameResponse(skill=skill_pb(skill) if skill else None)

    async def CreateSkill(self, request: pb.CreateSkillRequest, context: Ctx) -> pb.CreateSkillResponse:
        skill = await skills.create_skill(
            self._deps,
            _user(),
            SkillFields(
                name=required_text(request.name, "name", max_chars=MAX_SKILL_NAME),
                description=request.description,
                enabled=request.enabled,
                config=config_of(opt(request, "config")),
            ),
        )
        return pb.CreateSkillResponse(skill=skill_pb(skill))

    async def ToggleSkill(self, request: pb.ToggleSkillRequest, context: Ctx) -> pb.ToggleSkillResponse:
        skill = await skills.toggle_skill(self._deps, _user(), ids.SKILL.parse(request.id, "id"))
        return pb.ToggleSkillResponse(skill=skill_pb(skill) if skill else None)

    async def UpdateSkill(self, request: pb.UpdateSkillRequest, context: Ctx) -> pb.UpdateSkillResponse:
        skill = await skills.update_skill(
            self._deps,
            _user(),
            ids.SKILL.parse(request.id, "id"),
            SkillFields(
                name=opt(request, "name"),
                description=opt(request, "description"),
                enabled=opt(request, "enabled"),
                config=config_of(opt(request, "config")),
            ),
        )
        return pb.UpdateSkillResponse(skill=skill_pb(skill) if skill else None)

    async def DeleteSkill(self, request: pb.DeleteSkillRequest, context: Ctx) -> pb.DeleteSkillResponse:
        deleted = await skills.delete_skill(self._deps, _user(), ids.SKILL.parse(request.id, "id"))
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
        counts = await skills.backfill_skill_owners(self._deps, ids.USER.parse(request.owner_user_id, "owner_user_id"))
        return pb.BackfillSkillOwnersResponse(updated=counts.updated, total=counts.total)

    # --- scheduled tasks ---

    async def ListScheduledTasks(
        self, request: pb.ListScheduledTasksRequest, context: Ctx
    ) -> pb.ListScheduledTasksResponse:
        page = await tasks.list_tasks(self._deps, page_request(request.page_size, request.page_token))
        return pb.ListScheduledTasksResponse(tasks=[task_pb(t) for t in page.items], next_page_token=page.next_page_token)

    async def GetScheduledTask(self, request: pb.GetScheduledTaskRequest, context: Ctx) -> pb.GetScheduledTaskResponse:
        task = await tasks.get_task(self._deps, ids.SCHEDULED_TASK.parse(request.id, "id"))
        return pb.GetScheduledTaskResponse(task=task_pb(task) if task else None)

    async def CreateScheduledTask(
        self, request: pb.CreateScheduledTaskRequest, context: Ctx
    ) -> pb.CreateScheduledTaskResponse:
        task = await tasks.create_task(
            self._deps,
            TaskFields(
                name=required_text(request.name, "name", max_chars=MAX_TASK_NAME),
                description=opt(request, "description"),
                interval=duration(request, "interval"),
                payload=required_text(request.payload, "payload", max_chars=MAX_PAYLOAD),
                enabled=request.enabled,
                conversation_id=ids.CONVERSATION.parse_optional(opt(request, "conversation_id"), "conversation_id"),
            ),
        )
        return pb.CreateScheduledTaskResponse(task=task_pb(task))

    async def UpdateScheduledTask(
        self, request: pb.UpdateScheduledTaskRequest, context: Ctx
    ) -> pb.UpdateScheduledTaskResponse:
        task = await tasks.update_task(
            self._deps,
            ids.SCHEDULED_TASK.parse(request.id, "id"),
            TaskFields(
                name=opt(request, "name"),
                description=opt(request, "description"),
                interval=duration(request, "interval"),
                payload=opt(request, "payload"),
                enabled=opt(request, "enabled"),
                conversation_id=ids.CONVERSATION.parse_optional(opt(request, "conversation_id"), "conversation_id"),
            ),
        )
        return pb.UpdateScheduledTaskResponse(task=task_pb(task) if task else None)

    async def DeleteScheduledTask(
        self, request: pb.DeleteScheduledTaskRequest, context: Ctx
    ) -> pb.DeleteScheduledTaskResponse:
        await tasks.delete_task(self._deps, ids.SCHEDULED_TASK.parse(request.id, "id"))
        return pb.DeleteScheduledTaskResponse()

    async def ProcessDueScheduledTasks(
        self, request: pb.ProcessDueScheduledTasksRequest, context: Ctx
    ) -> pb.ProcessDueScheduledTasksResponse:
        swept = await tasks.process_due_tasks(self._deps, _batch_size(request.batch_size))
        return pb.ProcessDueScheduledTasksResponse(fired=swept.fired, advanced=swept.advanced, more=swept.more)


def _user() -> ResolvedUser:
    return current_principal().require_user()


def _batch_size(value: int, field: str = "batch_size") -> int:
    if value < 0 or value > jobs.MAX_SWEEP_BATCH:
        raise InvalidArgument(field, f"must be between 0 (default) and {jobs.MAX_SWEEP_BATCH}")
    return value
