"""The pure job rules the original backend applied, exactly (values in ms from the epoch as
the original kept them, converted at the edge of each case)."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from services.agent_queue.domain.jobs import (
    EPOCH,
    Job,
    JobStatus,
    can_retry,
    has_active_job_for_conversation,
    is_heartbeat_valid,
    is_job_stale,
    resolve_stale_action,
)
from zenthor.auth.principal import ResolvedUser, Role, UserStatus
from zenthor.retries import retry_delay_s, retry_workflow_id

T0_MS = 1_700_000_000_000


def at(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def job(**fields: object) -> Job:
    base = Job(
        id=uuid.uuid4(),
        message_id=uuid.uuid4(),
        conversation_id=uuid.uuid4(),
        conversation_user_id=None,
        conversation_contact_id=None,
        status=JobStatus.PROCESSING,
        error_reason=None,
        error_message=None,
        attempt_count=0,
        model_used=None,
        processor_id="w1",
        locked_until=None,
        started_at=None,
        last_heartbeat_at=None,
        finished_at=None,
        next_attempt_at=None,
        created_at=at(T0_MS),
    )
    return replace(base, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("locked_until", "started_at", "now", "stale"),
    [
        (T0_MS, None, T0_MS, False),  # exactly at expiry: not stale (strict)
        (T0_MS, None, T0_MS + 1, True),
        (0, None, 1, True),  # a zero lease is present
        (None, T0_MS, T0_MS + 300_000, False),  # legacy: strict > 5 min
        (None, T0_MS, T0_MS + 300_001, True),
        (None, None, T0_MS + 300_001, True),  # no start: measured from creation
        (None, None, T0_MS + 300_000, False),
    ],
)
def test_is_job_stale(locked_until: int | None, started_at: int | None, now: int, stale: bool) -> None:
    subject = job(
        locked_until=None if locked_until is None else at(locked_until),
        started_at=None if started_at is None else at(started_at),
    )
    assert is_job_stale(subject, at(now)) is stale


def test_resolve_stale_action_and_can_retry_share_the_cap_of_three() -> None:
    assert [resolve_stale_action(a) for a in (None, 0, 1, 2, 3)] == ["requeue", "requeue", "requeue", "fail", "fail"]
    assert [can_retry(a) for a in (None, 0, 1, 2, 3)] == [True, True, True, False, False]


def test_has_active_job_for_conversation() -> None:
    now = at(T0_MS)
    other = job(locked_until=at(T0_MS))  # now <= lockedUntil: active
    assert has_active_job_for_conversation([other], None, now)
    assert not has_active_job_for_conversation([other], other.id, now)  # excluded
    assert not has_active_job_for_conversation([job(locked_until=at(T0_MS - 1))], None, now)  # expired
    assert has_active_job_for_conversation([job(locked_until=None)], None, now)  # legacy: active
    assert has_active_job_for_conversation([job(locked_until=EPOCH)], None, now)  # zero: falsy, active
    assert not has_active_job_for_conversation([job(status=JobStatus.PENDING, locked_until=None)], None, now)


def test_is_heartbeat_valid() -> None:
    now = at(T0_MS)
    assert is_heartbeat_valid(job(locked_until=at(T0_MS)), "w1", now)
    assert not is_heartbeat_valid(job(locked_until=at(T0_MS - 1)), "w1", now)
    assert not is_heartbeat_valid(job(locked_until=at(T0_MS)), "w2", now)
    assert not is_heartbeat_valid(job(processor_id=None), "w1", now)  # absent never matches
    assert not is_heartbeat_valid(job(status=JobStatus.PENDING), "w1", now)
    assert is_heartbeat_valid(job(locked_until=None), "w1", now)  # no lease: not checked
    assert is_heartbeat_valid(job(locked_until=EPOCH), "w1", now)  # zero lease: falsy


def test_owner_is_the_conversations_user_or_the_callers_linked_contact() -> None:
    user, contact = uuid.uuid4(), uuid.uuid4()

    def caller(contact_id: uuid.UUID | None) -> ResolvedUser:
        return ResolvedUser(user_id=user, role=Role.MEMBER, status=UserStatus.ACTIVE, contact_id=contact_id)

    # The job stores the conversation's owner ids; the kit's one ownership rule decides.
    assert caller(None).owns(user_id=user, contact_id=None)
    assert caller(contact).owns(user_id=None, contact_id=contact)
    assert not caller(None).owns(user_id=None, contact_id=contact)
    assert not caller(contact).owns(user_id=uuid.uuid4(), contact_id=None)
    assert not caller(None).owns(user_id=None, contact_id=None)


def test_backoff_is_exponential_jittered_and_capped() -> None:
    rng = random.Random(1)
    for attempt, (low, high) in {1: (5, 10), 2: (10, 20), 3: (20, 40), 10: (150, 300), 50: (150, 300)}.items():
        delays = [retry_delay_s(attempt, rng) for _ in range(200)]
        assert low <= min(delays) and max(delays) <= high, attempt
        assert len(set(delays)) > 1  # jittered
    assert retry_workflow_id("job_abc", 2) == "retry-job_abc-2"


