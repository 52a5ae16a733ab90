"""Proto ⇄ domain conversions for the agent_queue servicer (transport only, no rules)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration

from services.agent_queue.domain.jobs import Job, JobStatus
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
