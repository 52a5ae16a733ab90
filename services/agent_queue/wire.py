"""Proto ⇄ domain conversions of the agent_queue service: request fields to domain values
(ids, optionals, durations, page tokens), domain values to response messages, and the
peers' records (messages, identity) to domain values and back into the context response."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from services.agent_queue.domain import jobs as job_rules
from services.agent_queue.domain.agents import Agent, AgentFields
from services.agent_queue.domain.context import (
    Channel,
    Contact,
    Conversation,
    ConversationContext,
    ConversationMessage,
    ConversationStatus,
    JsonValue,
    MessageRole,
    MessageStatus,
    ToolCall,
    User,
)
from services.agent_queue.domain.jobs import Completion, Job, JobStatus
from services.agent_queue.domain.policy import ToolPolicy
from services.agent_queue.domain.skills import Skill, SkillConfig, SkillFields
from services.agent_queue.domain.tasks import ScheduledTask, TaskFields
from services.agent_queue.usecases.jobs import ConversationCancel
from zenthor import ids
from zenthor.auth.principal import Role, UserStatus
from zenthor.convert import (
    duration_pb,
    optional_bool,
    optional_duration,
    optional_id,
    optional_str,
    optional_timestamp,
    timestamp,
)
from zenthor.errors import InvalidArgument
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.identity.v1 import identity_pb2
from zenthor.gen.zenthor.messages.v1 import messages_pb2
from zenthor.pagination import PageLimits, PageRequest, page_request

# What each list RPC accepts as `page_size` (0 asks for the default).
PENDING_JOBS_PAGE = PageLimits(default=100, maximum=1_000)
AGENTS_PAGE = PageLimits(default=100, maximum=500)
SKILLS_PAGE = PageLimits(default=100, maximum=500)
TASKS_PAGE = PageLimits(default=100, maximum=500)

E = TypeVar("E", bound=StrEnum)
P = TypeVar("P", bound=int)


class _EnumMap(Generic[E, P]):
    """A domain enum and a proto enum, both ways; the proto's UNSPECIFIED (or a value this
    build does not know) is None on the domain side."""

    def __init__(self, pairs: Mapping[E, P], unspecified: P) -> None:
        self._to_pb = dict(pairs)
        self._of_pb: dict[int, E] = {int(v): k for k, v in pairs.items()}
        self._unspecified = unspecified

    def of(self, value: int) -> E | None:
        return self._of_pb.get(value)

    def pb(self, value: E | None) -> P:
        return self._unspecified if value is None else self._to_pb[value]


JOB_STATUS = _EnumMap(
    {
        JobStatus.PENDING: pb.JOB_STATUS_PENDING,
        JobStatus.PROCESSING: pb.JOB_STATUS_PROCESSING,
        JobStatus.COMPLETED: pb.JOB_STATUS_COMPLETED,
        JobStatus.FAILED: pb.JOB_STATUS_FAILED,
        JobStatus.WAITING_RETRY: pb.JOB_STATUS_WAITING_RETRY,
        JobStatus.CANCELLED: pb.JOB_STATUS_CANCELLED,
    },
    pb.JOB_STATUS_UNSPECIFIED,
)
CHANNEL = _EnumMap(
    {Channel.WEB: types_pb2.CHANNEL_WEB, Channel.WHATSAPP: types_pb2.CHANNEL_WHATSAPP},
    types_pb2.CHANNEL_UNSPECIFIED,
)
CONVERSATION_STATUS = _EnumMap(
    {
        ConversationStatus.ACTIVE: messages_pb2.CONVERSATION_STATUS_ACTIVE,
        ConversationStatus.ARCHIVED: messages_pb2.CONVERSATION_STATUS_ARCHIVED,
    },
    messages_pb2.CONVERSATION_STATUS_UNSPECIFIED,
)
MESSAGE_ROLE = _EnumMap(
    {
        MessageRole.USER: messages_pb2.MESSAGE_ROLE_USER,
        MessageRole.ASSISTANT: messages_pb2.MESSAGE_ROLE_ASSISTANT,
        MessageRole.SYSTEM: messages_pb2.MESSAGE_ROLE_SYSTEM,
    },
    messages_pb2.MESSAGE_ROLE_UNSPECIFIED,
)
MESSAGE_STATUS = _EnumMap(
    {
        MessageStatus.PENDING: messages_pb2.MESSAGE_STATUS_PENDING,
        MessageStatus.SENT: messages_pb2.MESSAGE_STATUS_SENT,
        MessageStatus.DELIVERED: messages_pb2.MESSAGE_STATUS_DELIVERED,
        MessageStatus.FAILED: messages_pb2.MESSAGE_STATUS_FAILED,
    },
    messages_pb2.MESSAGE_STATUS_UNSPECIFIED,
)
USER_ROLE = _EnumMap({Role.ADMIN: identity_pb2.ROLE_ADMIN, Role.MEMBER: identity_pb2.ROLE_MEMBER}, identity_pb2.ROLE_UNSPECIFIED)
USER_STATUS = _EnumMap(
    {UserStatus.ACTIVE: identity_pb2.USER_STATUS_ACTIVE, UserStatus.INACTIVE: identity_pb2.USER_STATUS_INACTIVE},
    identity_pb2.USER_STATUS_UNSPECIFIED,
)


# --- request fields ---


class _Paged(Protocol):
    @property
    def page_size(self) -> int: ...

    @property
    def page_token(self) -> str: ...


def page_of(request: _Paged, limits: PageLimits) -> PageRequest:
    return page_request(request.page_size, request.page_token, limits)


def lease(message: Message, field: str = "lease") -> timedelta | None:
    """A job lease (ClaimJobs, HeartbeatJob): the kit refuses what cannot be a duration, the
    domain (check_lease) its bounds, with their own message."""
    return optional_duration(message, field)


def older_than(request: pb.CleanupOldJobsRequest) -> timedelta | None:
    return optional_duration(request, "older_than", maximum=job_rules.MAX_RETENTION)


def interval(message: Message, field: str = "interval") -> timedelta | None:
    """A scheduled task's interval; the domain (check_interval) says what it may be."""
    return optional_duration(message, field)


def job_id(value: str, field: str = "job_id") -> uuid.UUID:
    return ids.JOB.parse(value, field)


def job_ids(values: Sequence[str], field: str = "job_ids") -> list[uuid.UUID]:
    return [ids.JOB.parse(v, f"{field}[{i}]") for i, v in enumerate(values)]


def completions(values: Sequence[pb.JobCompletion], field: str) -> list[Completion]:
    """Acknowledgements (CompleteJobs, or carried on ClaimJobs); the domain checks the rest."""
    return [
        Completion(ids.JOB.parse(c.job_id, f"{field}[{i}].job_id"), optional_str(c, "model_used"))
        for i, c in enumerate(values)
    ]


def message_id(value: str, field: str = "message_id") -> uuid.UUID:
    return ids.MESSAGE.parse(value, field)


def conversation_cancel(request: pb.CancelConversationJobsRequest) -> ConversationCancel:
    return ConversationCancel(
        conversation_id=conversation_id(request.conversation_id),
        before_message_id=message_id(request.before_message_id, "before_message_id"),
        message_ids=[ids.MESSAGE.parse(v, f"message_ids[{i}]") for i, v in enumerate(request.message_ids)],
        conversation_user_id=optional_user_id(request, "conversation_user_id"),
        conversation_contact_id=optional_contact_id(request, "conversation_contact_id"),
        discard_reply=request.discard_reply,
    )


def conversation_id(value: str, field: str = "conversation_id") -> uuid.UUID:
    return ids.CONVERSATION.parse(value, field)


def agent_id(value: str, field: str = "id") -> uuid.UUID:
    return ids.AGENT.parse(value, field)


def skill_id(value: str, field: str = "id") -> uuid.UUID:
    return ids.SKILL.parse(value, field)


def task_id(value: str, field: str = "id") -> uuid.UUID:
    return ids.SCHEDULED_TASK.parse(value, field)


def user_id(value: str, field: str) -> uuid.UUID:
    return ids.USER.parse(value, field)


def user_ids(values: Sequence[str], field: str) -> list[uuid.UUID]:
    return [ids.USER.parse(v, f"{field}[{i}]") for i, v in enumerate(values)]


def optional_user_id(message: Message, field: str) -> uuid.UUID | None:
    return optional_id(ids.USER, message, field)


def optional_contact_id(message: Message, field: str) -> uuid.UUID | None:
    return optional_id(ids.CONTACT, message, field)


def optional_conversation_id(message: Message, field: str = "conversation_id") -> uuid.UUID | None:
    return optional_id(ids.CONVERSATION, message, field)


# --- jobs ---


def job_pb(job: Job) -> pb.Job:
    return pb.Job(
        id=ids.JOB.format(job.id),
        create_time=timestamp(job.created_at),
        message_id=ids.MESSAGE.format(job.message_id),
        conversation_id=ids.CONVERSATION.format(job.conversation_id),
        status=JOB_STATUS.pb(job.status),
        error_reason=job.error_reason,
        error_message=job.error_message,
        attempt_count=job.attempt_count,
        model_used=job.model_used,
        processor_id=job.processor_id,
        lease_expire_time=_ts(job.locked_until),
        start_time=_ts(job.started_at),
        last_heartbeat_time=_ts(job.last_heartbeat_at),
        finish_time=_ts(job.finished_at),
        next_attempt_time=_ts(job.next_attempt_at),
        cancel_request_time=_ts(job.cancel_requested_at),
        cancel_discards_reply=job.cancel_discards_reply,
    )


class JobPbMemo:
    """Converts a stream's successive job lists, reusing the message of a job that did not change
    since the list before (a WatchPendingJobs snapshot repeats most of the previous one)."""

    def __init__(self) -> None:
        self._last: dict[uuid.UUID, tuple[Job, pb.Job]] = {}

    def __call__(self, found: Sequence[Job]) -> list[pb.Job]:
        current: dict[uuid.UUID, tuple[Job, pb.Job]] = {}
        for job in found:
            seen = self._last.get(job.id)
            current[job.id] = seen if seen is not None and seen[0] == job else (job, job_pb(job))
        self._last = current
        return [current[j.id][1] for j in found]


def job_basic_pb(job: Job) -> pb.Job:
    """JOB_VIEW_BASIC: what a worker reads of a job it claimed (ClaimJobs `view`)."""
    return pb.Job(
        id=ids.JOB.format(job.id),
        message_id=ids.MESSAGE.format(job.message_id),
        conversation_id=ids.CONVERSATION.format(job.conversation_id),
        status=JOB_STATUS.pb(job.status),
        attempt_count=job.attempt_count,
        processor_id=job.processor_id,
        lease_expire_time=_ts(job.locked_until),
    )


def claimed_jobs_pb(claimed: Sequence[Job], view: int) -> list[pb.Job]:
    if view == pb.JOB_VIEW_BASIC:
        return [job_basic_pb(j) for j in claimed]
    return [job_pb(j) for j in claimed]


def job_refs(values: Sequence[uuid.UUID]) -> list[str]:
    return [ids.JOB.format(v) for v in values]


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


def new_agent_fields(request: pb.CreateAgentRequest) -> AgentFields:
    return AgentFields(
        name=request.name,
        description=request.description,
        system_prompt=request.system_prompt,
        model=optional_str(request, "model"),
        fallback_model=optional_str(request, "fallback_model"),
        enabled=request.enabled,
        tool_policy=policy_of(request.tool_policy if request.HasField("tool_policy") else None),
    )


def agent_changes(request: pb.UpdateAgentRequest) -> AgentFields:
    return AgentFields(
        name=optional_str(request, "name"),
        description=optional_str(request, "description"),
        system_prompt=optional_str(request, "system_prompt"),
        model=optional_str(request, "model"),
        fallback_model=optional_str(request, "fallback_model"),
        enabled=optional_bool(request, "enabled"),
        tool_policy=policy_of(request.tool_policy if request.HasField("tool_policy") else None),
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
    return SkillConfig(
        system_prompt=optional_str(message, "system_prompt"),
        tool_policy=policy_of(message.tool_policy if message.HasField("tool_policy") else None),
    )


def new_skill_fields(request: pb.CreateSkillRequest) -> SkillFields:
    return SkillFields(
        name=request.name,
        description=request.description,
        enabled=request.enabled,
        config=config_of(request.config if request.HasField("config") else None),
    )


def skill_changes(request: pb.UpdateSkillRequest) -> SkillFields:
    return SkillFields(
        name=optional_str(request, "name"),
        description=optional_str(request, "description"),
        enabled=optional_bool(request, "enabled"),
        config=config_of(request.config if request.HasField("config") else None),
    )


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


def new_task_fields(request: pb.CreateScheduledTaskRequest) -> TaskFields:
    return TaskFields(
        name=request.name,
        description=optional_str(request, "description"),
        interval=interval(request),
        cron=optional_str(request, "cron"),
        time_zone=optional_str(request, "time_zone"),
        payload=request.payload,
        enabled=request.enabled,
        conversation_id=optional_conversation_id(request),
    )


def task_changes(request: pb.UpdateScheduledTaskRequest) -> TaskFields:
    return TaskFields(
        name=optional_str(request, "name"),
        description=optional_str(request, "description"),
        interval=interval(request),
        cron=optional_str(request, "cron"),
        time_zone=optional_str(request, "time_zone"),
        payload=optional_str(request, "payload"),
        enabled=optional_bool(request, "enabled"),
        conversation_id=optional_conversation_id(request),
    )


def run_time(request: pb.FireScheduledTaskRequest) -> datetime:
    """The run a task's workflow fires: a required instant that a datetime can hold."""
    value = optional_timestamp(request, "run_time")
    if value is None:
        raise InvalidArgument("run_time", "is required")
    return value


def task_pb(task: ScheduledTask) -> pb.ScheduledTask:
    schedule = task.schedule
    return pb.ScheduledTask(
        id=ids.SCHEDULED_TASK.format(task.id),
        create_time=timestamp(task.created_at),
        name=task.name,
        description=task.description,
        interval=duration_pb(schedule.interval) if schedule.interval is not None else None,
        cron=schedule.cron,
        time_zone=schedule.time_zone,
        payload=task.payload,
        enabled=task.enabled,
        last_run_time=_ts(task.last_run_at),
        next_run_time=_ts(task.next_run_at),
        conversation_id=ids.CONVERSATION.format(task.conversation_id) if task.conversation_id else None,
    )


# --- the peers' records (read by peers.py) and the context response built from them ---


def conversation_of(message: messages_pb2.Conversation) -> Conversation:
    return Conversation(
        id=ids.CONVERSATION.parse(message.id, "conversation.id"),
        created_at=_datetime(message.create_time),
        channel=CHANNEL.of(message.channel),
        user_id=ids.USER.parse_optional(optional_str(message, "user_id"), "conversation.user_id"),
        contact_id=ids.CONTACT.parse_optional(optional_str(message, "contact_id"), "conversation.contact_id"),
        agent_id=ids.AGENT.parse_optional(optional_str(message, "agent_id"), "conversation.agent_id"),
        title=optional_str(message, "title"),
        status=CONVERSATION_STATUS.of(message.status),
    )


def conversation_pb(conversation: Conversation) -> messages_pb2.Conversation:
    return messages_pb2.Conversation(
        id=ids.CONVERSATION.format(conversation.id),
        create_time=timestamp(conversation.created_at),
        channel=CHANNEL.pb(conversation.channel),
        user_id=_format_optional(ids.USER, conversation.user_id),
        contact_id=_format_optional(ids.CONTACT, conversation.contact_id),
        agent_id=_format_optional(ids.AGENT, conversation.agent_id),
        title=conversation.title,
        status=CONVERSATION_STATUS.pb(conversation.status),
    )


def message_of(message: messages_pb2.Message) -> ConversationMessage:
    return ConversationMessage(
        id=ids.MESSAGE.parse(message.id, "message.id"),
        created_at=_datetime(message.create_time),
        updated_at=_datetime(message.update_time),
        conversation_id=ids.CONVERSATION.parse(message.conversation_id, "message.conversation_id"),
        role=MESSAGE_ROLE.of(message.role),
        content=message.content,
        channel=CHANNEL.of(message.channel),
        tool_calls=tuple(
            ToolCall(
                name=call.name,
                input=_json(call.input) if call.HasField("input") else None,
                output=_json(call.output) if call.HasField("output") else None,
                has_output=call.HasField("output"),
            )
            for call in message.tool_calls
        ),
        streaming=message.streaming,
        status=MESSAGE_STATUS.of(message.status),
    )


def message_pb(message: ConversationMessage) -> messages_pb2.Message:
    return messages_pb2.Message(
        id=ids.MESSAGE.format(message.id),
        create_time=timestamp(message.created_at),
        update_time=timestamp(message.updated_at),
        conversation_id=ids.CONVERSATION.format(message.conversation_id),
        role=MESSAGE_ROLE.pb(message.role),
        content=message.content,
        channel=CHANNEL.pb(message.channel),
        tool_calls=[
            messages_pb2.ToolCall(
                name=call.name,
                input=_value(call.input),
                output=_value(call.output) if call.has_output else None,
            )
            for call in message.tool_calls
        ],
        streaming=message.streaming,
        status=MESSAGE_STATUS.pb(message.status),
    )


def user_of(message: identity_pb2.User) -> User:
    return User(
        id=ids.USER.parse(message.id, "user.id"),
        created_at=_datetime(message.create_time),
        updated_at=_datetime(message.update_time),
        external_id=message.external_id,
        name=message.name,
        email=message.email,
        role=USER_ROLE.of(message.role),
        email_verified=optional_bool(message, "email_verified"),
        image=optional_str(message, "image"),
        phone=optional_str(message, "phone"),
        status=USER_STATUS.of(message.status),
    )


def user_pb(user: User) -> identity_pb2.User:
    return identity_pb2.User(
        id=ids.USER.format(user.id),
        create_time=timestamp(user.created_at),
        update_time=timestamp(user.updated_at),
        external_id=user.external_id,
        name=user.name,
        email=user.email,
        role=USER_ROLE.pb(user.role),
        email_verified=user.email_verified,
        image=user.image,
        phone=user.phone,
        status=USER_STATUS.pb(user.status),
    )


def contact_of(message: identity_pb2.Contact) -> Contact:
    return Contact(
        id=ids.CONTACT.parse(message.id, "contact.id"),
        created_at=_datetime(message.create_time),
        phone=message.phone,
        name=message.name,
        is_allowed=message.is_allowed,
        user_id=ids.USER.parse_optional(optional_str(message, "user_id"), "contact.user_id"),
    )


def contact_pb(contact: Contact) -> identity_pb2.Contact:
    return identity_pb2.Contact(
        id=ids.CONTACT.format(contact.id),
        create_time=timestamp(contact.created_at),
        phone=contact.phone,
        name=contact.name,
        is_allowed=contact.is_allowed,
        user_id=_format_optional(ids.USER, contact.user_id),
    )


def context_response(found: ConversationContext | None) -> pb.GetConversationContextResponse:
    if found is None:
        return pb.GetConversationContextResponse()
    return pb.GetConversationContextResponse(
        context=pb.ConversationContext(
            conversation=conversation_pb(found.conversation),
            user=user_pb(found.user) if found.user else None,
            contact=contact_pb(found.contact) if found.contact else None,
            messages=[message_pb(m) for m in found.messages],
            skills=[skill_pb(s) for s in found.skills],
            agent=agent_pb(found.agent) if found.agent else None,
        )
    )


# --- scalars ---


def _ts(value: datetime | None) -> Timestamp | None:
    return timestamp(value) if value is not None else None


def _datetime(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def _format_optional(kind: ids.IdKind, value: uuid.UUID | None) -> str | None:
    return kind.format(value) if value is not None else None


def _json(value: struct_pb2.Value) -> JsonValue:
    data: JsonValue = json_format.MessageToDict(value)
    return data


def _value(data: JsonValue) -> struct_pb2.Value:
    return json_format.Parse(json.dumps(data), struct_pb2.Value())
