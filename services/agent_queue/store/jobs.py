"""SQL of the job queue. Every state change is one guarded statement; claims lock with
SKIP LOCKED so concurrent workers never wait on each other's rows."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.agent_queue.domain.jobs import Job, JobStatus
from services.agent_queue.store.tables import jobs


def job_from_row(row: sa.Row) -> Job:
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
