"""Proto ⇄ domain conversions for the agent_queue servicer (transport only, no rules)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration

from services.agent_queue.domain.agents import Agent
from services.agent_queue.domain.jobs import Job, JobStatus
from services.agent_queue.domain.policy import ToolPolicy
from services.agent_queue.domain.skills import Skill, SkillConfig
from services.agent_queue.domain.tasks import ScheduledTask
from zenthor import ids
from zenthor.convert import timestamp
from zenthor.errors import InvalidArgument
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.pagination import DEFAULT_PAGE_SIZE, PageRequest, decode_token

JOB_STATUS = {
    JobStatus.PENDING: pb.JOB_STATUS_PENDING,
    JobStatus.PROCESSING: pb.JOB_STATUS_PROCESSING,
    JobStatus.COMPLETED: pb.JOB_STATUS_COMPLETED,
    JobStatus.FAILED: pb.JOB_STATUS_FAILED,
    JobStatus.WAITING_RETRY: pb.JOB_STATUS_WAITING_RETRY,
}


def opt(message: Any, field: str) -> Any:
    """The field's value when set, None when absent (proto3 `optional`/message fields)."""
    return getattr(message, field) if message.HasField(field) else None


def duration(message: Any, field: str) -> timedelta | None:
    return opt(message, field).ToTimedelta() if message.HasField(field) else None


def duration_pb(value: timedelta) -> Duration:
    d = Duration()
    d.FromTimedelta(value)
    return d


def job_pb(job: Job) -> pb.Job:
    return pb.Job(
        id=ids.JOB.format(job.id),
        create_time=timestamp(job.created_at),
        message_id=ids.MESSAGE.format(job.message_id),
        conversation_id=ids.CONVERSATION.format(job.conversation_id),
        status=JOB_STATUS[job.status],
        error_reason=job.error_reason,
        error_message=job.error_message,
        attempt_count=job.attempt_count,
        model_used=job.model_used,
        processor_id=job.processor_id,
        lease_expire_time=timestamp(job.locked_until) if job.locked_until else None,
        start_time=timestamp(job.started_at) if job.started_at else None,
        last_heartbeat_time=timestamp(job.last_heartbeat_at) if job.last_heartbeat_at else None,
        finish_time=timestamp(job.finished_at) if job.finished_at else None,
        next_attempt_time=timestamp(job.next_attempt_at) if job.next_attempt_at else None,
    )


def list_page(page_size: int, page_token: str, *, max_size: int, default: int = DEFAULT_PAGE_SIZE) -> PageRequest:
    """Like zenthor.pagination.page_request, with this list's own maximum."""
    if page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    if page_size > max_size:
        raise InvalidArgument("page_size", f"must be at most {max_size}")
    return PageRequest(size=page_size or default, after=decode_token(page_token))


# --- agents, skills, tasks ---


def policy_pb(policy: ToolPolicy | None) -> pb.ToolPolicy | None:
    if policy is None:
        return None
    return pb.ToolPolicy(
        allow=pb.ToolNameList(names=policy.allow) if policy.allow is not None else None,
        deny=pb.ToolNameList(names=policy.deny) if policy.deny is not None else None,
    )


def policy_of(message: pb.ToolPolicy | None) -> ToolPolicy | None:
    if message is None:
        return None
    return ToolPolicy(
        allow=tuple(message.allow.names) if message.HasField("allow") else None,
        deny=tuple(message.deny.names) if message.HasField("deny") else None,
    )


def agent_pb(agent: Agent) -> pb.Agent:
    return pb.Agent(
        id=ids.AGENT.format(agent.id),
        create_time=timestamp(agent.created_at),
        name=agent.name,
        description=agent.description,
        system_prompt=agent.system_prompt,
        model=agent.model,
        fallback_model=agent.fallback_model,
        enabled=agent.enabled,
        tool_policy=policy_pb(agent.tool_policy),
    )


def config_of(message: pb.SkillConfig | None) -> SkillConfig | None:
    if message is None:
        return None
    return SkillConfig(system_prompt=opt(message, "system_prompt"), tool_policy=policy_of(opt(message, "tool_policy")))


def skill_pb(skill: Skill) -> pb.Skill:
    config = skill.config
    return pb.Skill(
        id=ids.SKILL.format(skill.id),
        create_time=timestamp(skill.created_at),
        owner_user_id=ids.USER.format(skill.owner_user_id) if skill.owner_user_id else None,
        name=skill.name,
        description=skill.description,
        enabled=skill.enabled,
        config=pb.SkillConfig(system_prompt=config.system_prompt, tool_policy=policy_pb(config.tool_policy))
        if config is not None
        else None,
    )


def task_pb(task: ScheduledTask) -> pb.ScheduledTask:
    return pb.ScheduledTask(
        id=ids.SCHEDULED_TASK.format(task.id),
        create_time=timestamp(task.created_at),
        name=task.name,
        description=task.description,
        interval=duration_pb(task.interval),
        payload=task.payload,
        enabled=task.enabled,
        last_run_time=timestamp(task.last_run_at) if task.last_run_at else None,
        next_run_time=timestamp(task.next_run_at) if task.next_run_at else None,
        conversation_id=ids.CONVERSATION.format(task.conversation_id) if task.conversation_id else None,
    )
