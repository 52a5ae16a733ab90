"""Job rules: the lifecycle, the lease constants, the pure rules the original backend applied to
claims, heartbeats, retries and stale leases (reproduced exactly, over datetimes instead of
epoch milliseconds), and the checks of every job request value."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from zenthor.errors import InvalidArgument
from zenthor.pagination import PageLimits
from zenthor.validate import optional_text, required_text


class JobStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    # Failed retryably or lost its lease; RetryWorkflow releases it to PENDING after a
    # backoff (docs/hardening.md #14).
    WAITING_RETRY = "waiting_retry"
    # Cancelled (CancelJob, double-texting): final, never retried (docs/double-texting.md).
    CANCELLED = "cancelled"


# A cancel ends these at once; a PROCESSING job's holder is asked to stop instead.
CANCELLABLE_AT_ONCE = frozenset({JobStatus.PENDING, JobStatus.WAITING_RETRY})
FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
# CancelConversationJobs: messages whose jobs may not be queued yet, per call.
MAX_CANCEL_MESSAGES = 100
# ListActiveJobs answers at most this many (a conversation rarely has more than two).
MAX_ACTIVE_JOBS = 100
# The reason a cancelled job's placeholders are failed with (FailJobPlaceholders).
CANCELLED_REASON = "cancelled"


# 60 s lease, heartbeat every 15 s: the runtime's cadence.
DEFAULT_LEASE = timedelta(seconds=60)
# Contract bounds for a lease (the original did not clamp `lockMs`).
MIN_LEASE = timedelta(seconds=1)
MAX_LEASE = timedelta(minutes=10)
# Attempts a job gets in all, shared by the stale-lease requeue and explicit retries.
MAX_ATTEMPTS = 3
# A processing row without a lease (written before leases existed) is stale 5 min after its claim.
LEGACY_STALE = timedelta(milliseconds=300_000)
# One claim takes at most this many jobs (one round trip, one transaction).
MAX_CLAIM = 100
# One call acknowledges at most this many jobs (CompleteJobs, or acks carried on ClaimJobs): a
# batch as large as the largest claim.
MAX_ACKS = MAX_CLAIM
# WatchPendingJobs: claimable jobs per snapshot (0 asks for the default).
WATCH_PENDING = PageLimits(default=100, maximum=1_000)
# One batch of a scheduled sweep (0 asks for the default).
STALE_SWEEP = PageLimits(default=500, maximum=5_000)
CLEANUP_SWEEP = PageLimits(default=1_000, maximum=5_000)
MAX_PROCESSOR_ID = 128
MAX_ERROR_REASON = 64
# Longer worker messages are truncated, not refused (the runtime sends at most 500).
MAX_ERROR_MESSAGE = 2_000
MAX_MODEL_NAME = 200
# Finished jobs are kept a week, measured from completion (docs/hardening.md #20).
JOB_RETENTION = timedelta(days=7)
# The longest retention a sweep may ask for; a longer `older_than` is INVALID_ARGUMENT.
MAX_RETENTION = timedelta(days=365)
STALE_LEASE_REASON = "stale_lease"
STALE_LEASE_FAILED_MESSAGE = "Job exceeded max attempts after lease expiry"
STALE_LEASE_RETRY_MESSAGE = "Lease expired before the job finished"
# A zero `lockedUntil` is present but falsy in the original (JavaScript truthiness).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

StaleAction = Literal["fail", "requeue"]


@dataclass(frozen=True)
class Job:
    id: uuid.UUID
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    conversation_user_id: uuid.UUID | None
    conversation_contact_id: uuid.UUID | None
    status: JobStatus
    error_reason: str | None
    error_message: str | None
    attempt_count: int
    model_used: str | None
    processor_id: str | None
    locked_until: datetime | None
    started_at: datetime | None
    last_heartbeat_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime
    # Set when a cancellation was asked for: a processing job's holder must stop.
    cancel_requested_at: datetime | None = None
    # The cancellation also deletes the job's replies (double-texting `rollback`).
    cancel_discards_reply: bool = False

    @property
    def cancel_requested(self) -> bool:
        return self.cancel_requested_at is not None


@dataclass(frozen=True)
class Completion:
    """A lease holder's acknowledgement of one finished job."""

    job_id: uuid.UUID
    model_used: str | None


def _truthy(value: datetime | None) -> bool:
    return value is not None and value != EPOCH


# --- the original's job rules, exactly ---


def is_job_stale(job: Job, now: datetime) -> bool:
    """With a lease (even a zero one): stale iff now > lockedUntil. Without: stale iff more
    than LEGACY_STALE passed since the claim (or since creation)."""
    if job.locked_until is not None:
        return now > job.locked_until
    since = job.started_at if job.started_at is not None else job.created_at
    return now - since > LEGACY_STALE


def resolve_stale_action(attempt_count: int | None) -> StaleAction:
    return "fail" if (attempt_count or 0) + 1 >= MAX_ATTEMPTS else "requeue"


def has_active_job_for_conversation(jobs: Iterable[Job], exclude_id: uuid.UUID | None, now: datetime) -> bool:
    """A processing job other than `exclude_id` whose lease is absent/zero or not expired."""
    return any(
        j.id != exclude_id
        and j.status is JobStatus.PROCESSING
        and (not _truthy(j.locked_until) or now <= j.locked_until)  # type: ignore[operator]
        for j in jobs
    )


def is_heartbeat_valid(job: Job, processor_id: str, now: datetime) -> bool:
    if job.status is not JobStatus.PROCESSING:
        return False
    if job.processor_id is None or job.processor_id != processor_id:
        return False
    if _truthy(job.locked_until) and now > job.locked_until:  # type: ignore[operator]
        return False
    return True


def can_retry(attempt_count: int | None) -> bool:
    return (attempt_count or 0) + 1 < MAX_ATTEMPTS


# --- why a guarded transition found no row ---


def lease_refusal(job: Job, processor_id: str, now: datetime, action: str) -> str:
    """The FAILED_PRECONDITION message for a lease-holder-only action that matched no row."""
    if job.status is not JobStatus.PROCESSING:
        return f"cannot {action} job: it is {job.status.value}, not processing"
    if job.processor_id != processor_id:
        return f"cannot {action} job: its lease is held by another processor"
    if _truthy(job.locked_until) and now > job.locked_until:  # type: ignore[operator]
        return f"cannot {action} job: its lease expired"
    return f"cannot {action} job: it changed concurrently"


def cancel_refusal(job: Job) -> str:
    """The FAILED_PRECONDITION message for a cancel of a job that already finished."""
    return f"cannot cancel job: it is already {job.status.value}"


# --- request checks ---


def check_cancel_messages(count: int, field: str = "message_ids") -> int:
    if count > MAX_CANCEL_MESSAGES:
        raise InvalidArgument(field, f"must hold at most {MAX_CANCEL_MESSAGES} ids")
    return count


def check_lease(lease: timedelta | None, field: str = "lease") -> timedelta:
    if lease is None:
        return DEFAULT_LEASE
    if lease < MIN_LEASE or lease > MAX_LEASE:
        raise InvalidArgument(field, f"must be between {_secs(MIN_LEASE)} and {_secs(MAX_LEASE)}")
    return lease


def check_claim_count(count: int, field: str = "job_ids") -> int:
    """A claim may name at most MAX_CLAIM jobs."""
    if count > MAX_CLAIM:
        raise InvalidArgument(field, f"must hold at most {MAX_CLAIM} ids")
    return count


def check_ack_count(count: int, field: str) -> int:
    if count > MAX_ACKS:
        raise InvalidArgument(field, f"must hold at most {MAX_ACKS} jobs")
    return count


def check_completions(completions: Sequence[Completion], field: str) -> list[Completion]:
    """At most MAX_ACKS acknowledgements, each model name within bounds."""
    check_ack_count(len(completions), field)
    return [
        Completion(c.job_id, check_model_used(c.model_used, f"{field}[{i}].model_used"))
        for i, c in enumerate(completions)
    ]


def check_max_jobs(value: int, field: str = "max_jobs") -> int:
    if value < 1 or value > MAX_CLAIM:
        raise InvalidArgument(field, f"must be between 1 and {MAX_CLAIM}")
    return value


def check_processor_id(value: str, field: str = "processor_id") -> str:
    return required_text(value, field, max_chars=MAX_PROCESSOR_ID)


def check_error_reason(value: str | None, field: str = "error_reason") -> str | None:
    return optional_text(value, field, max_chars=MAX_ERROR_REASON)


def truncate_error_message(value: str | None, field: str = "error_message") -> str | None:
    if value is None:
        return None
    return optional_text(value[:MAX_ERROR_MESSAGE], field, max_chars=MAX_ERROR_MESSAGE)


def check_model_used(value: str | None, field: str = "model_used") -> str | None:
    return optional_text(value, field, max_chars=MAX_MODEL_NAME)


def check_release_attempt(attempt_count: int, field: str = "attempt_count") -> int:
    """The attempt RetryWorkflow releases: the first retry is attempt 1."""
    if attempt_count < 1:
        raise InvalidArgument(field, "must be at least 1")
    return attempt_count


def retention(older_than: timedelta | None, field: str = "older_than") -> timedelta:
    """How long finished jobs are kept: JOB_RETENTION unless the sweep asks for a positive other."""
    if older_than is None:
        return JOB_RETENTION
    if older_than <= timedelta(0):
        raise InvalidArgument(field, "must be positive")
    return older_than


def _secs(value: timedelta) -> str:
    seconds = value.total_seconds()
    return f"{seconds:g} s" if seconds < 60 else f"{seconds / 60:g} min"
