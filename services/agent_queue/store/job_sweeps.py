"""SQL of the job sweeps: stale leases (for the schedule and inline in claims) and retention
by completion time (docs/hardening.md #20)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.agent_queue.domain.jobs import Job
from services.agent_queue.store.jobs import fail_processing, job_from_row

# --- stale leases ---

# Candidates for the stale rule, written so the partial lease index serves it; the caller
# re-checks each row with domain.is_job_stale. Rows another transaction holds (a worker
# completing right now) are skipped, not waited for.
LOCK_STALE_JOBS = sa.text(
    """
    SELECT * FROM agent_queue.jobs
    WHERE status = 'processing'
      AND ((locked_until IS NOT NULL AND locked_until < :now)
           OR (locked_until IS NULL AND COALESCE(started_at, created_at) < :legacy_cutoff))
    ORDER BY locked_until NULLS FIRST, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)


async def lock_stale_jobs(conn: AsyncConnection, now: datetime, legacy_cutoff: datetime, limit: int) -> list[Job]:
    rows = (await conn.execute(LOCK_STALE_JOBS, {"now": now, "legacy_cutoff": legacy_cutoff, "limit": limit})).all()
    return [job_from_row(r) for r in rows]


async def fail_stale(
    conn: AsyncConnection, job_ids: Sequence[uuid.UUID], reason: str, message: str, now: datetime
) -> list[Job]:
    """Stale leases out of attempts fail (store.jobs.fail_processing). Returns the failed jobs."""
    if not job_ids:
        return []
    rows = (await conn.execute(fail_processing(list(job_ids), reason, message, now))).all()
    return [job_from_row(r) for r in rows]


@dataclass(frozen=True)
class Requeue:
    """A stale lease with attempts left: its next attempt and when RetryWorkflow releases it."""

    job_id: uuid.UUID
    attempt_count: int
    next_attempt_at: datetime


# One statement for the batch: each row its own attempt and retry time, from parallel arrays.
REQUEUE_STALE = sa.text(
    """
    UPDATE agent_queue.jobs AS j
    SET status = 'waiting_retry',
        attempt_count = v.attempt_count,
        next_attempt_at = v.next_attempt_at,
        error_reason = :reason,
        error_message = :message,
        processor_id = NULL,
        locked_until = NULL,
        started_at = NULL,
        last_heartbeat_at = NULL
    FROM unnest(CAST(:ids AS uuid[]), CAST(:attempts AS integer[]), CAST(:next_at AS timestamptz[]))
         AS v(id, attempt_count, next_attempt_at)
    WHERE j.id = v.id AND j.status = 'processing'
    RETURNING j.*
    """
)


async def requeue_stale(conn: AsyncConnection, requeues: Sequence[Requeue], reason: str, message: str) -> list[Job]:
    """Stale leases with attempts left wait for their retry in WAITING_RETRY
    (docs/hardening.md #14). Returns the requeued jobs."""
    if not requeues:
        return []
    params = {
        "ids": [r.job_id for r in requeues],
        "attempts": [r.attempt_count for r in requeues],
        "next_at": [r.next_attempt_at for r in requeues],
        "reason": reason,
        "message": message,
    }
    return [job_from_row(r) for r in (await conn.execute(REQUEUE_STALE, params)).all()]


# --- retention (by completion time: docs/hardening.md #20) ---

DELETE_FINISHED_JOBS = sa.text(
    """
    WITH old AS (
        SELECT id FROM agent_queue.jobs
        WHERE status IN ('completed', 'failed', 'cancelled') AND finished_at < :cutoff
        ORDER BY finished_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM agent_queue.jobs AS jobs USING old WHERE jobs.id = old.id
    """
)


async def delete_finished_before(conn: AsyncConnection, cutoff: datetime, limit: int) -> int:
    result = await conn.execute(DELETE_FINISHED_JOBS, {"cutoff": cutoff, "limit": limit})
    return int(result.rowcount)
