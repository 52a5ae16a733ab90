"""SQL of the job queue. Every state change is one guarded statement; claims lock with
SKIP LOCKED so concurrent workers never wait on each other's rows and read only conversation
heads (migration 0002). The hot statements (enqueue, claim, acknowledge, heartbeat) run alone on
the direct pool, each its own transaction in one round trip; the rest inside a unit of work."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.agent_queue.domain.jobs import Completion, Job, JobStatus
from services.agent_queue.store.job_events import insert_job_events
from services.agent_queue.store.tables import JOBS_CHANNEL, PENDING_CHANNEL, jobs
from zenthor.db import DirectPool
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
        cancel_requested_at=row.cancel_requested_at,
        cancel_discards_reply=row.cancel_discards_reply,
    )


# A pending job for a message, unless the message has one (the outbox may deliver twice). The
# insert trigger makes it its conversation's head when the conversation has none. Every new job
# wakes WatchPendingJobs (its count changed; a head is claimable at once); a head also wakes the
# conversation's typing indicator (it just became active).
INSERT_JOB = f"""
    WITH inserted AS (
        INSERT INTO agent_queue.jobs (id, message_id, conversation_id, conversation_user_id,
                                      conversation_contact_id, status, attempt_count, created_at)
        VALUES (%(id)s, %(message_id)s, %(conversation_id)s, %(user_id)s, %(contact_id)s, 'pending', 0, %(now)s)
        ON CONFLICT (message_id) DO NOTHING
        RETURNING *
    )
    SELECT inserted.*,
           pg_notify('{PENDING_CHANNEL}', replace(inserted.conversation_id::text, '-', '')) AS queued,
           CASE WHEN inserted.is_head
                THEN pg_notify('{JOBS_CHANNEL}', replace(inserted.conversation_id::text, '-', '')) END AS active
      FROM inserted
"""
JOB_BY_MESSAGE = "SELECT * FROM agent_queue.jobs WHERE message_id = %(message_id)s"
HEAD_KEY = "jobs_head_key"
INSERT_ATTEMPTS = 3


async def insert_job_if_absent(
    db: DirectPool,
    *,
    job_id: uuid.UUID,
    message_id: uuid.UUID,
    conversation_id: uuid.UUID,
    conversation_user_id: uuid.UUID | None,
    conversation_contact_id: uuid.UUID | None,
    now: datetime,
) -> Job | None:
    """The new pending job; None when the message already has one (outbox replay)."""
    params = {
        "id": job_id,
        "message_id": message_id,
        "conversation_id": conversation_id,
        "user_id": conversation_user_id,
        "contact_id": conversation_contact_id,
        "now": now,
    }
    for attempt in range(INSERT_ATTEMPTS):
        try:
            rows = await db.fetch(INSERT_JOB, params)
        except psycopg.errors.UniqueViolation as e:
            # Two jobs queued into an idle conversation at the same instant both took the head;
            # the index kept one. Again: this time the winner is seen and heads the queue.
            if e.diag.constraint_name != HEAD_KEY or attempt == INSERT_ATTEMPTS - 1:
                raise
            continue
        return job_from_row(rows[0]) if rows else None
    return None  # unreachable: the last attempt returns or raises


async def job_by_message(db: DirectPool, message_id: uuid.UUID) -> Job | None:
    rows = await db.fetch(JOB_BY_MESSAGE, {"message_id": message_id})
    return job_from_row(rows[0]) if rows else None


async def get_job(conn: AsyncConnection, job_id: uuid.UUID) -> Job | None:
    row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
    return job_from_row(row) if row else None


# --- claims ---

# The one rule of what a claim may take, shared by ClaimJobs and WatchPendingJobs so the
# snapshot never offers a job the claim would refuse: a pending conversation head. A head is its
# conversation's oldest unfinished job, so a conversation with a job processing or waiting for its
# retry has no pending head: replies keep the order of the messages, and a released retry is the
# head again and goes first (docs/hardening.md #42).
CLAIMABLE = "j.status = 'pending' AND j.is_head"

# Claims up to max_jobs claimable jobs for one worker in one statement, returning them as claimed
# (docs/hardening.md #13). The partial index jobs_claimable_idx holds only pending heads, so the
# scan touches at most max_jobs rows (plus the ones other claims hold) whatever the backlog.
# Per-conversation exclusivity: one head per conversation (jobs_head_key) and SKIP LOCKED mean two
# claims never take two jobs of one conversation; jobs_one_processing_per_conversation guarantees
# it whatever the code does.
CLAIM_JOBS = f"""
    WITH candidates AS (
        SELECT j.id
        FROM agent_queue.jobs AS j
        WHERE {CLAIMABLE}
          -- restricted to the requested ids, when any were given (never past the order rule)
          AND (%(any_job)s OR j.id = ANY(CAST(%(job_ids)s AS uuid[])))
        ORDER BY j.id  -- UUIDv7: oldest first
        LIMIT %(max_jobs)s
        -- rows another claim holds are skipped, never waited for
        FOR UPDATE OF j SKIP LOCKED
    )
    UPDATE agent_queue.jobs AS jobs
    SET status = 'processing',
        processor_id = %(processor_id)s,
        locked_until = %(locked_until)s,
        started_at = %(now)s,
        last_heartbeat_at = %(now)s,
        error_reason = NULL,
        error_message = NULL,
        next_attempt_at = NULL
    FROM candidates
    WHERE jobs.id = candidates.id
    RETURNING jobs.*
"""

# Whether any lease is stale (the rule of domain.is_job_stale, two probes of
# jobs_processing_lease_idx), asked by every claim so the use case sweeps only when there is
# something to sweep instead of opening a transaction for it on every claim.
STALE_LEASES = """
    SELECT EXISTS (SELECT 1 FROM agent_queue.jobs
                    WHERE status = 'processing' AND locked_until < %(now)s)
        OR EXISTS (SELECT 1 FROM agent_queue.jobs
                    WHERE status = 'processing' AND locked_until IS NULL
                      AND COALESCE(started_at, created_at) < %(legacy_cutoff)s) AS found
"""

# The claim as ClaimJobs sends it: one row comes back even when nothing was claimed.
CLAIM_JOBS_SEEING_STALE = f"""
    WITH claimed AS ({CLAIM_JOBS}),
    stale AS ({STALE_LEASES})
    SELECT stale.found AS stale_leases, NULL::uuid[] AS acked, claimed.* FROM stale LEFT JOIN claimed ON true
"""

# Both are the residue of races the statement cannot see (a claim naming a job whose conversation
# another claim just took): the index refuses the second PROCESSING row, or two claims deadlock.
UNIQUE_VIOLATION = "23505"
DEADLOCK_DETECTED = "40P01"


class ClaimConflict(Exception):
    """A concurrent claim won a conversation this claim also picked; nothing was written and the
    caller retries (a fresh snapshot sees the winner's row)."""


# --- lease holder transitions (docs/hardening.md #12: only the holder, only from processing) ---

HEARTBEAT = """
    UPDATE agent_queue.jobs
    SET locked_until = %(locked_until)s, last_heartbeat_at = %(now)s
    WHERE id = %(id)s
      AND status = 'processing'
      AND processor_id = %(processor_id)s
      -- domain.is_heartbeat_valid: a lease that expired (but was not swept yet) is lost; an
      -- absent or zero lease is not checked
      AND (locked_until IS NULL OR locked_until = 'epoch' OR %(now)s <= locked_until)
    RETURNING *
"""


async def heartbeat(db: DirectPool, job_id: uuid.UUID, processor_id: str, now: datetime, locked_until: datetime) -> Job | None:
    params = {"id": job_id, "processor_id": processor_id, "now": now, "locked_until": locked_until}
    rows = await db.fetch(HEARTBEAT, params)
    return job_from_row(rows[0]) if rows else None


# The hot path of every job: the lease holder's acknowledgements, any number in one statement.
# Only the holder, only from processing (docs/hardening.md #12); an ack that matches no row was
# refused (the lease was lost to the stale sweep, or the id is not the caller's). Clearing is_head
# fires the hand-over trigger (migration 0006, once for the statement): each conversation's next
# pending job becomes claimable and WatchPendingJobs is woken, or the conversation is idle and its
# typing indicator is.
COMPLETE_JOBS = """
    UPDATE agent_queue.jobs AS j
    SET status = 'completed', is_head = false, model_used = v.model_used, processor_id = NULL,
        locked_until = NULL, finished_at = %(now)s
    FROM unnest(CAST(%(ids)s AS uuid[]), CAST(%(models)s AS text[])) AS v(id, model_used)
    WHERE j.id = v.id AND j.status = 'processing' AND j.processor_id = %(processor_id)s
      -- a job whose cancellation was asked for ends cancelled instead (usecases.jobs.end_cancelled)
      AND j.cancel_requested_at IS NULL
    RETURNING j.*
"""
# Each completed job's `job.completed` webhook event, in the same statement (store/job_events.py).
ACKED_EVENTS = insert_job_events("acked", "%(now)s")
# Acknowledgements carried on a claim, and the claim, in one statement (one round trip). The claim
# reads the snapshot from before the acks: a head the acks hand over is claimable from the next
# statement on (the use case claims again when this one came back short).
ACK_THEN_CLAIM_JOBS = f"""
    WITH acked AS ({COMPLETE_JOBS}),
    acked_events AS ({ACKED_EVENTS}),
    claimed AS ({CLAIM_JOBS}),
    stale AS ({STALE_LEASES})
    SELECT stale.found AS stale_leases, ARRAY(SELECT id FROM acked) AS acked, claimed.*
      FROM stale LEFT JOIN claimed ON true
"""


@dataclass(frozen=True)
class Claimed:
    jobs: list[Job]
    # The acknowledgements that went through (the others were refused).
    acked: set[uuid.UUID]
    # Some lease is past its end: the caller sweeps.
    stale_leases: bool


async def claim_jobs(
    db: DirectPool,
    *,
    processor_id: str,
    max_jobs: int,
    now: datetime,
    locked_until: datetime,
    legacy_cutoff: datetime,
    job_ids: Sequence[uuid.UUID],
    completed: Sequence[Completion] = (),
) -> Claimed:
    """Acknowledges `completed` (if any), then claims, in one statement."""
    params = {
        "processor_id": processor_id,
        "max_jobs": max_jobs,
        "now": now,
        "locked_until": locked_until,
        "legacy_cutoff": legacy_cutoff,
        "any_job": not job_ids,
        "job_ids": list(job_ids),
        "ids": [c.job_id for c in completed],
        "models": [c.model_used for c in completed],
    }
    try:
        rows = await db.fetch(ACK_THEN_CLAIM_JOBS if completed else CLAIM_JOBS_SEEING_STALE, params)
    except psycopg.Error as e:
        if e.sqlstate in (UNIQUE_VIOLATION, DEADLOCK_DETECTED):
            raise ClaimConflict(str(e)) from e
        raise
    claimed = sorted((job_from_row(r) for r in rows if r.id is not None), key=lambda j: j.id)
    return Claimed(claimed, acked=set(rows[0].acked or ()), stale_leases=bool(rows[0].stale_leases))


# CompleteJob answers the job as stored.
COMPLETE_JOB = """
    UPDATE agent_queue.jobs
    SET status = 'completed', is_head = false, model_used = %(model_used)s, processor_id = NULL,
        locked_until = NULL, finished_at = %(now)s
    WHERE id = %(id)s AND status = 'processing' AND processor_id = %(processor_id)s
      AND cancel_requested_at IS NULL
    RETURNING *
"""
# Both with their webhook events (store/job_events.py), still one statement each.
COMPLETE_JOBS_WITH_EVENTS = f"WITH acked AS ({COMPLETE_JOBS}), acked_events AS ({ACKED_EVENTS}) SELECT id FROM acked"
COMPLETE_JOB_WITH_EVENT = f"""
    WITH acked AS ({COMPLETE_JOB}), acked_events AS ({ACKED_EVENTS}) SELECT * FROM acked
"""


async def complete_many(db: DirectPool, completions: Sequence[Completion], processor_id: str, now: datetime) -> set[uuid.UUID]:
    """The ids completed; the others were refused."""
    params = {
        "ids": [c.job_id for c in completions],
        "models": [c.model_used for c in completions],
        "processor_id": processor_id,
        "now": now,
    }
    return {r.id for r in await db.fetch(COMPLETE_JOBS_WITH_EVENTS, params)}


async def complete(db: DirectPool, job_id: uuid.UUID, processor_id: str, model_used: str | None, now: datetime) -> Job | None:
    params = {"id": job_id, "processor_id": processor_id, "model_used": model_used, "now": now}
    rows = await db.fetch(COMPLETE_JOB_WITH_EVENT, params)
    return job_from_row(rows[0]) if rows else None


async def get_job_direct(db: DirectPool, job_id: uuid.UUID) -> Job | None:
    rows = await db.fetch("SELECT * FROM agent_queue.jobs WHERE id = %(id)s", {"id": job_id})
    return job_from_row(rows[0]) if rows else None


FAIL_JOB = sa.text(
    """
    UPDATE agent_queue.jobs
    SET status = 'failed', is_head = false, error_reason = :reason, error_message = :message,
        processor_id = NULL, locked_until = NULL, finished_at = :now
    -- only the lease holder, only from processing (docs/hardening.md #12); a job whose
    -- cancellation was asked for ends cancelled instead (end_cancelled)
    WHERE id = :id AND status = 'processing' AND processor_id = :processor_id AND cancel_requested_at IS NULL
    RETURNING *
    """
)


async def fail(
    conn: AsyncConnection,
    job_id: uuid.UUID,
    processor_id: str,
    reason: str | None,
    message: str | None,
    now: datetime,
) -> Job | None:
    params = {"id": job_id, "processor_id": processor_id, "reason": reason, "message": message, "now": now}
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


def fail_processing(
    job_ids: list[uuid.UUID], reason: str | None, message: str | None, now: datetime
) -> sa.Update:
    """PROCESSING → FAILED for these jobs, returning the rows: the one statement both a held
    job out of attempts and a stale lease out of attempts end with. Attempt count, start and
    heartbeat times stay as they were, as in the original."""
    return (
        sa.update(jobs)
        .where(jobs.c.id.in_(job_ids), jobs.c.status == JobStatus.PROCESSING.value)
        .values(
            status=JobStatus.FAILED.value,
            is_head=False,  # hands the conversation over (the trigger of migration 0006)
            error_reason=reason,
            error_message=message,
            processor_id=None,
            locked_until=None,
            finished_at=now,
        )
        .returning(jobs)
    )


async def fail_held(
    conn: AsyncConnection, job_id: uuid.UUID, reason: str | None, message: str | None, now: datetime
) -> Job:
    """PROCESSING → FAILED for a row the caller holds (attempts exhausted)."""
    row = (await conn.execute(fail_processing([job_id], reason, message, now))).one()
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


CANCEL_REQUESTED = "WHERE status = 'processing' AND cancel_requested_at IS NOT NULL"

# WatchPendingJobs' snapshot in one statement (one snapshot, one round trip): what ClaimJobs would
# take now (the same CLAIMABLE rule), oldest first, and how many jobs are pending at all. One row
# comes back even when nothing is claimable.
PENDING_SNAPSHOT = f"""
    SELECT (SELECT count(*) FROM agent_queue.jobs WHERE status = 'pending') AS pending_count,
           -- the running jobs whose holders must stop, and who holds them (jobs_cancel_requested_idx)
           ARRAY(SELECT id FROM agent_queue.jobs {CANCEL_REQUESTED} ORDER BY id) AS cancel_ids,
           ARRAY(SELECT processor_id FROM agent_queue.jobs {CANCEL_REQUESTED} ORDER BY id) AS cancel_holders,
           c.*
      FROM (SELECT 1) AS one
      LEFT JOIN LATERAL (SELECT j.* FROM agent_queue.jobs AS j WHERE {CLAIMABLE} ORDER BY j.id LIMIT %(limit)s) AS c
        ON true
"""


@dataclass(frozen=True)
class PendingRows:
    claimable: list[Job]
    pending_count: int
    # (job id, holder) of every processing job whose cancellation was asked for.
    cancel_requested: tuple[tuple[uuid.UUID, str], ...]


async def pending_snapshot(db: DirectPool, limit: int) -> PendingRows:
    rows = await db.fetch(PENDING_SNAPSHOT, {"limit": limit})
    first = rows[0]
    return PendingRows(
        [job_from_row(r) for r in rows if r.id is not None],
        int(first.pending_count),
        tuple(zip(first.cancel_ids or (), first.cancel_holders or (), strict=True)),
    )


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


async def active_jobs(conn: AsyncConnection, conversation_id: uuid.UUID, limit: int) -> list[Job]:
    """The conversation's unfinished jobs, oldest first."""
    query = (
        sa.select(jobs)
        .where(jobs.c.conversation_id == conversation_id, jobs.c.status.in_(ACTIVE_STATUSES))
        .order_by(jobs.c.id)
        .limit(limit)
    )
    return [job_from_row(r) for r in (await conn.execute(query)).all()]


# --- cancellation (docs/double-texting.md) ---

# cancel_set: what a cancel does to an unfinished job, in one guarded SET: pending or waiting for its retry →
# cancelled at once (clearing is_head hands a head over through the trigger of migration 0006; a
# waiting retry's RetryWorkflow then releases nothing, ReleaseJob being fenced on waiting_retry);
# processing → only the request is recorded, its holder stops and acknowledges (end_cancelled).
# Under READ COMMITTED a row a concurrent claim just took is re-read before the SET applies, so a
# cancel racing a claim either cancels the pending job (the claim skips it) or records the request
# on the job the claim took, never neither.
def cancel_set(row: str = "agent_queue.jobs") -> str:
    """The SET clause, reading the row as `row` (ON CONFLICT's SET must name it)."""
    cancellable = f"{row}.status IN ('pending', 'waiting_retry')"
    return f"""
    status = CASE WHEN {cancellable} THEN 'cancelled' ELSE {row}.status END,
    is_head = CASE WHEN {cancellable} THEN false ELSE {row}.is_head END,
    finished_at = CASE WHEN {cancellable} THEN :now ELSE {row}.finished_at END,
    next_attempt_at = CASE WHEN {cancellable} THEN NULL ELSE {row}.next_attempt_at END,
    cancel_requested_at = COALESCE({row}.cancel_requested_at, :now),
    cancel_discards_reply = {row}.cancel_discards_reply OR :discard
    """


UNFINISHED = "status IN ('pending', 'processing', 'waiting_retry')"

CANCEL_JOB = sa.text(f"UPDATE agent_queue.jobs SET {cancel_set()} WHERE id = :id AND {UNFINISHED} RETURNING *")

# Every unfinished job of a conversation queued for a message older than `before` (UUIDv7 message
# ids are send order within a conversation, whose sends messages serializes).
CANCEL_CONVERSATION_JOBS = sa.text(
    f"""
    UPDATE agent_queue.jobs SET {cancel_set()}
     WHERE conversation_id = :conversation_id AND message_id < :before AND {UNFINISHED}
    RETURNING *
    """
)

# Jobs for messages whose EnqueueJob may still be on its way: recorded cancelled now, so that
# EnqueueJob (ON CONFLICT (message_id) DO NOTHING) finds them and queues nothing; a job that did
# arrive meanwhile is cancelled as above. The unique message id serializes the two writers.
CANCEL_BY_MESSAGES = sa.text(
    f"""
    INSERT INTO agent_queue.jobs AS jobs (id, message_id, conversation_id, conversation_user_id,
                                         conversation_contact_id, status, attempt_count, created_at,
                                         finished_at, cancel_requested_at, cancel_discards_reply)
    SELECT v.id, v.message_id, :conversation_id, :user_id, :contact_id, 'cancelled', 0, :now, :now, :now, :discard
      FROM unnest(CAST(:ids AS uuid[]), CAST(:message_ids AS uuid[])) AS v(id, message_id)
    ON CONFLICT (message_id) DO UPDATE SET {cancel_set("jobs")}
     WHERE jobs.{UNFINISHED}
    RETURNING *
    """
)


async def cancel_job(conn: AsyncConnection, job_id: uuid.UUID, discard: bool, now: datetime) -> Job | None:
    """The job cancelled (or its cancellation requested); None when it is missing or finished."""
    row = (await conn.execute(CANCEL_JOB, {"id": job_id, "discard": discard, "now": now})).first()
    return job_from_row(row) if row else None


async def cancel_conversation_jobs(
    conn: AsyncConnection, conversation_id: uuid.UUID, before_message_id: uuid.UUID, discard: bool, now: datetime
) -> list[Job]:
    params = {"conversation_id": conversation_id, "before": before_message_id, "discard": discard, "now": now}
    return [job_from_row(r) for r in (await conn.execute(CANCEL_CONVERSATION_JOBS, params)).all()]


async def cancel_by_messages(
    conn: AsyncConnection,
    *,
    job_ids: Sequence[uuid.UUID],
    message_ids: Sequence[uuid.UUID],
    conversation_id: uuid.UUID,
    conversation_user_id: uuid.UUID | None,
    conversation_contact_id: uuid.UUID | None,
    discard: bool,
    now: datetime,
) -> list[Job]:
    if not message_ids:
        return []
    params = {
        "ids": list(job_ids),
        "message_ids": list(message_ids),
        "conversation_id": conversation_id,
        "user_id": conversation_user_id,
        "contact_id": conversation_contact_id,
        "discard": discard,
        "now": now,
    }
    return [job_from_row(r) for r in (await conn.execute(CANCEL_BY_MESSAGES, params)).all()]


# A processing job whose cancellation was asked for, ended by its holder's acknowledgement
# (complete, fail, retry: whichever it sends) or by the stale sweep: cancelled, never retried.
END_CANCELLED = sa.text(
    """
    UPDATE agent_queue.jobs
    SET status = 'cancelled', is_head = false, processor_id = NULL, locked_until = NULL, finished_at = :now
    WHERE id = ANY(CAST(:ids AS uuid[])) AND status = 'processing' AND cancel_requested_at IS NOT NULL
      AND (CAST(:processor_id AS text) IS NULL OR processor_id = :processor_id)
    RETURNING *
    """
)


async def end_cancelled(
    conn: AsyncConnection, job_ids: Sequence[uuid.UUID], processor_id: str | None, now: datetime
) -> list[Job]:
    """PROCESSING with a cancel request → CANCELLED; only the holder's when `processor_id` is given
    (the sweep passes None for the stale leases it holds)."""
    if not job_ids:
        return []
    params = {"ids": list(job_ids), "processor_id": processor_id, "now": now}
    return [job_from_row(r) for r in (await conn.execute(END_CANCELLED, params)).all()]
