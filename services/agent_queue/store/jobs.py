"""SQL of the job queue. Every state change is one guarded statement; claims lock with
SKIP LOCKED so concurrent workers never wait on each other's rows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.agent_queue.domain.jobs import Job, JobStatus
from services.agent_queue.store.tables import jobs
from zenthor.pagination import PageRequest


def job_from_row(row: sa.Row[Any]) -> Job:
    return Job(
        id=row.id,
        message_id=row.message_id,
        conversation_id=row.conversation_id,
        conversation_user_id=row.conversation_user_id,
        conversation_contact_id=row.conversation_contact_id,
        status=JobStatus(row.status),
        error_reason=row.error_reason,
        error_message=row.error_message,
        attempt_count=row.attempt_count,
        model_used=row.model_used,
        processor_id=row.processor_id,
        locked_until=row.locked_until,
        started_at=row.started_at,
        last_heartbeat_at=row.last_heartbeat_at,
        finished_at=row.finished_at,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
    )


async def insert_job_if_absent(
    conn: AsyncConnection,
    *,
    job_id: uuid.UUID,
    message_id: uuid.UUID,
    conversation_id: uuid.UUID,
    conversation_user_id: uuid.UUID | None,
    conversation_contact_id: uuid.UUID | None,
    now: datetime,
) -> Job | None:
    """A pending job; None when the message already has one (outbox replay)."""
    stmt = (
        pg.insert(jobs)
        .values(
            id=job_id,
            message_id=message_id,
            conversation_id=conversation_id,
            conversation_user_id=conversation_user_id,
            conversation_contact_id=conversation_contact_id,
            status=JobStatus.PENDING.value,
            attempt_count=0,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=[jobs.c.message_id])
        .returning(jobs)
    )
    row = (await conn.execute(stmt)).first()
    return job_from_row(row) if row else None


async def get_job(conn: AsyncConnection, job_id: uuid.UUID) -> Job | None:
    row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
    return job_from_row(row) if row else None


async def get_job_by_message(conn: AsyncConnection, message_id: uuid.UUID) -> Job | None:
    row = (await conn.execute(sa.select(jobs).where(jobs.c.message_id == message_id))).first()
    return job_from_row(row) if row else None


# --- claims ---

# Claims up to :max_jobs pending jobs for one worker in one statement, returning them as
# claimed (docs/hardening.md #13). Per-conversation exclusivity: the partial unique index
# jobs_one_processing_per_conversation is the guarantee; these steps keep claims from
# tripping over it.
CLAIM_JOBS = sa.text(
    """
    WITH candidates AS (
        SELECT j.id
        FROM agent_queue.jobs AS j
        WHERE j.status = 'pending'
          -- restricted to the requested ids, when any were given
          AND (:any_job OR j.id = ANY(CAST(:job_ids AS uuid[])))
          -- skip busy conversations: any processing job blocks (stale ones were swept first)
          AND NOT EXISTS (
              SELECT 1 FROM agent_queue.jobs AS p
              WHERE p.conversation_id = j.conversation_id AND p.status = 'processing'
          )
          -- only the oldest pending job of its conversation, so one claim never takes two
          -- jobs of a conversation and a concurrent claim that holds that job makes us skip
          -- the whole conversation instead of its next job
          AND NOT EXISTS (
              SELECT 1 FROM agent_queue.jobs AS o
              WHERE o.conversation_id = j.conversation_id AND o.status = 'pending' AND o.id < j.id
                AND (:any_job OR o.id = ANY(CAST(:job_ids AS uuid[])))
          )
        ORDER BY j.id  -- UUIDv7: oldest first
        LIMIT :max_jobs
        -- rows another claim holds are skipped, never waited for
        FOR UPDATE OF j SKIP LOCKED
    )
    UPDATE agent_queue.jobs AS jobs
    SET status = 'processing',
        processor_id = :processor_id,
        locked_until = :locked_until,
        started_at = :now,
        last_heartbeat_at = :now,
        error_reason = NULL,
        error_message = NULL,
        next_attempt_at = NULL
    FROM candidates
    WHERE jobs.id = candidates.id
    RETURNING jobs.*
    """
)

# Both are the residue of races the statement cannot see (two claims naming different jobs
# of one conversation; a job released while another of its conversation is being claimed):
# the index refuses the second PROCESSING row, or the two claims deadlock on it.
UNIQUE_VIOLATION = "23505"
DEADLOCK_DETECTED = "40P01"


class ClaimConflict(Exception):
    """A concurrent claim won a conversation this claim also picked; the transaction is
    aborted and the caller retries (a fresh snapshot sees the winner's row)."""


async def claim_jobs(
    conn: AsyncConnection,
    *,
    processor_id: str,
    max_jobs: int,
    now: datetime,
    locked_until: datetime,
    job_ids: Sequence[uuid.UUID],
) -> list[Job]:
    params = {
        "processor_id": processor_id,
        "max_jobs": max_jobs,
        "now": now,
        "locked_until": locked_until,
        "any_job": not job_ids,
        "job_ids": list(job_ids),
    }
    try:
        rows = (await conn.execute(CLAIM_JOBS, params)).all()
    except DBAPIError as e:
        if getattr(e.orig, "sqlstate", None) in (UNIQUE_VIOLATION, DEADLOCK_DETECTED):
            raise ClaimConflict(str(e.orig)) from e
        raise
    return sorted((job_from_row(r) for r in rows), key=lambda j: j.id)


# --- lease holder transitions (docs/hardening.md #12: only the holder, only from processing) ---

HEARTBEAT = sa.text(
    """
    UPDATE agent_queue.jobs
    SET locked_until = :locked_until, last_heartbeat_at = :now
    WHERE id = :id
      AND status = 'processing'
      AND processor_id = :processor_id
      -- domain.is_heartbeat_valid: a lease that expired (but was not swept yet) is lost; an
      -- absent or zero lease is not checked
      AND (locked_until IS NULL OR locked_until = 'epoch' OR :now <= locked_until)
    RETURNING *
    """
)


async def heartbeat(
    conn: AsyncConnection, job_id: uuid.UUID, processor_id: str, now: datetime, locked_until: datetime
) -> Job | None:
    row = (
        await conn.execute(
            HEARTBEAT, {"id": job_id, "processor_id": processor_id, "now": now, "locked_until": locked_until}
        )
    ).first()
    return job_from_row(row) if row else None


# The hot path of every job: one statement moves the job and queues the wake-up for
# watchers of its conversation (pg_notify is sent at commit, never for a rollback).
COMPLETE_JOB = sa.text(
    """
    WITH done AS (
        UPDATE agent_queue.jobs
        SET status = 'completed', model_used = :model_used, processor_id = NULL,
            locked_until = NULL, finished_at = :now
        -- only the lease holder, only from processing (docs/hardening.md #12)
        WHERE id = :id AND status = 'processing' AND processor_id = :processor_id
        RETURNING *
    )
    SELECT done.*, pg_notify(:channel, replace(done.conversation_id::text, '-', '')) AS notified FROM done
    """
)

FAIL_JOB = sa.text(
    """
    WITH done AS (
        UPDATE agent_queue.jobs
        SET status = 'failed', error_reason = :reason, error_message = :message, processor_id = NULL,
            locked_until = NULL, finished_at = :now
        -- only the lease holder, only from processing (docs/hardening.md #12)
        WHERE id = :id AND status = 'processing' AND processor_id = :processor_id
        RETURNING *
    )
    SELECT done.*, pg_notify(:channel, replace(done.conversation_id::text, '-', '')) AS notified FROM done
    """
)


async def complete(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    processor_id: str,
    model_used: str | None,
    now: datetime,
    *,
    notify_channel: str,
) -> Job | None:
    params = {"id": job_id, "processor_id": processor_id, "model_used": model_used, "now": now, "channel": notify_channel}
    row = (await conn.execute(COMPLETE_JOB, params)).first()
    return job_from_row(row) if row else None


async def fail(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    processor_id: str,
    reason: str | None,
    message: str | None,
    now: datetime,
    *,
    notify_channel: str,
) -> Job | None:
    params = {
        "id": job_id,
        "processor_id": processor_id,
        "reason": reason,
        "message": message,
        "now": now,
        "channel": notify_channel,
    }
    row = (await conn.execute(FAIL_JOB, params)).first()
    return job_from_row(row) if row else None


async def lock_job(conn: AsyncConnection, job_id: uuid.UUID) -> Job | None:
    """The job, row-locked until commit (a read-decide-write transition)."""
    row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id).with_for_update())).first()
    return job_from_row(row) if row else None


async def to_waiting_retry(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    *,
    attempt_count: int,
    next_attempt_at: datetime,
    reason: str | None,
    message: str | None,
) -> Job:
    """PROCESSING → WAITING_RETRY (lease cleared, attempt counted); the caller holds the row."""
    row = (
        await conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == JobStatus.PROCESSING.value)
            .values(
                status=JobStatus.WAITING_RETRY.value,
                attempt_count=attempt_count,
                next_attempt_at=next_attempt_at,
                error_reason=reason,
                error_message=message,
                processor_id=None,
                locked_until=None,
                started_at=None,
                last_heartbeat_at=None,
            )
            .returning(jobs)
        )
    ).one()
    return job_from_row(row)


async def fail_held(
    conn: AsyncConnection, job_id: uuid.UUID, reason: str | None, message: str | None, now: datetime
) -> Job:
    """PROCESSING → FAILED for a row the caller holds (attempts exhausted)."""
    row = (
        await conn.execute(
            sa.update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == JobStatus.PROCESSING.value)
            .values(
                status=JobStatus.FAILED.value,
                error_reason=reason,
                error_message=message,
                processor_id=None,
                locked_until=None,
                finished_at=now,
            )
            .returning(jobs)
        )
    ).one()
    return job_from_row(row)


async def release(conn: AsyncConnection, job_id: uuid.UUID, attempt_count: int) -> Job | None:
    """WAITING_RETRY → PENDING, only for the attempt the retry workflow was started for."""
    row = (
        await conn.execute(
            sa.update(jobs)
            .where(
                jobs.c.id == job_id,
                jobs.c.status == JobStatus.WAITING_RETRY.value,
                jobs.c.attempt_count == attempt_count,
            )
            .values(status=JobStatus.PENDING.value, next_attempt_at=None)
            .returning(jobs)
        )
    ).first()
    return job_from_row(row) if row else None


# --- reads ---


async def list_pending(conn: AsyncConnection, page: PageRequest) -> list[Job]:
    query = (
        sa.select(jobs).where(jobs.c.status == JobStatus.PENDING.value).order_by(jobs.c.id).limit(page.size)
    )
    if page.after is not None:
        query = query.where(jobs.c.id > page.after)
    return [job_from_row(r) for r in (await conn.execute(query)).all()]


# What ClaimJobs would take now: the oldest pending job of each idle conversation.
CLAIMABLE_JOBS = sa.text(
    """
    SELECT j.* FROM agent_queue.jobs AS j
    WHERE j.status = 'pending'
      AND NOT EXISTS (
          SELECT 1 FROM agent_queue.jobs AS p
          WHERE p.conversation_id = j.conversation_id AND p.status = 'processing'
      )
      AND NOT EXISTS (
          SELECT 1 FROM agent_queue.jobs AS o
          WHERE o.conversation_id = j.conversation_id AND o.status = 'pending' AND o.id < j.id
      )
    ORDER BY j.id
    LIMIT :limit
    """
)


async def claimable_jobs(conn: AsyncConnection, limit: int) -> list[Job]:
    return [job_from_row(r) for r in (await conn.execute(CLAIMABLE_JOBS, {"limit": limit})).all()]


async def count_pending(conn: AsyncConnection) -> int:
    query = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status == JobStatus.PENDING.value)
    return int((await conn.execute(query)).scalar_one())


ACTIVE_STATUSES = (JobStatus.PENDING.value, JobStatus.PROCESSING.value, JobStatus.WAITING_RETRY.value)


async def conversation_owners(conn: AsyncConnection, conversation_id: uuid.UUID) -> list[tuple[uuid.UUID | None, uuid.UUID | None, bool]]:
    """The owner ids stored with the conversation's jobs, each with whether any of those jobs
    is still active (pending, processing or waiting for a retry)."""
    query = (
        sa.select(
            jobs.c.conversation_user_id,
            jobs.c.conversation_contact_id,
            sa.func.bool_or(jobs.c.status.in_(ACTIVE_STATUSES)),
        )
        .where(jobs.c.conversation_id == conversation_id)
        .group_by(jobs.c.conversation_user_id, jobs.c.conversation_contact_id)
    )
    return [(r[0], r[1], bool(r[2])) for r in (await conn.execute(query)).all()]
