"""Job queue use cases: enqueue, claim, heartbeat, complete, fail, retry, release, cancel, sweeps."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from services.agent_queue.domain import jobs as domain
from services.agent_queue.domain.jobs import Completion, Job, JobStatus
from services.agent_queue.store import job_sweeps as sweeps
from services.agent_queue.store import jobs as store
from services.agent_queue.store.job_events import add_final_job_events
from services.agent_queue.store.tables import JOBS_CHANNEL, PENDING_CHANNEL, outbox
from services.agent_queue.usecases.deps import Deps
from zenthor import ids
from zenthor.auth.principal import ResolvedUser, Role
from zenthor.errors import FailedPrecondition, InvalidArgument, NotFound
from zenthor.notify import ChangeFeed, notify
from zenthor.outbox import add_event
from zenthor.pagination import Page, PageRequest, check_size, next_token
from zenthor.retries import add_retry, retry_delay_s

RELEASE_TARGET = "agent_queue.ReleaseJob"
# Outbox topic: a job that ends an attempt (requeued, waiting for its retry, failed for good)
# has the open placeholders of that attempt failed by messages (FailJobPlaceholders,
# docs/hardening.md #40), so a runtime that crashed mid-reply leaves no endless "typing".
FAIL_PLACEHOLDERS_TOPIC = "messages.fail_job_placeholders"
# Stale leases swept inline by a claim that saw one (the original's claim cleaned up before its
# guard); the schedule's RequeueStaleJobs takes the rest.
INLINE_STALE_BATCH = 50
CLAIM_ATTEMPTS = 5


async def enqueue_job(
    deps: Deps,
    *,
    message_id: uuid.UUID,
    conversation_id: uuid.UUID,
    conversation_user_id: uuid.UUID | None,
    conversation_contact_id: uuid.UUID | None,
) -> tuple[Job, bool]:
    """Idempotent on the message id: a replay returns the existing job unchanged. One statement
    (the insert, its head and its wake-ups), no transaction around it."""
    job = await store.insert_job_if_absent(
        deps.db,
        job_id=ids.JOB.new(),
        message_id=message_id,
        conversation_id=conversation_id,
        conversation_user_id=conversation_user_id,
        conversation_contact_id=conversation_contact_id,
        now=deps.clock(),
    )
    if job is not None:
        return job, True
    existing = await store.job_by_message(deps.db, message_id)
    assert existing is not None  # the unique message id matched a committed row
    return existing, False


async def get_job(deps: Deps, job_id: uuid.UUID) -> Job | None:
    async with deps.uow() as uow:
        return await store.get_job(uow.conn, job_id)


async def list_pending_jobs(deps: Deps, page: PageRequest) -> Page[Job]:
    async with deps.uow() as uow:
        found = await store.list_pending(uow.conn, page)
    return Page(found, next_token([j.id for j in found], page.size))


# --- claims and the lease holder's calls ---


@dataclass(frozen=True)
class ClaimOutcome:
    jobs: list[Job]
    # Acknowledgements carried on the claim that were refused (the lease was lost, or the job was
    # not the caller's), in the order they were sent.
    refused: list[uuid.UUID]


async def claim_jobs(
    deps: Deps,
    *,
    processor_id: str,
    max_jobs: int,
    lease: timedelta | None,
    job_ids: Sequence[uuid.UUID],
    completed: Sequence[Completion] = (),
) -> ClaimOutcome:
    """The caller's finished jobs acknowledged, then up to `max_jobs` claimed: one statement, no
    transaction around it. A job the acks just made claimable (its conversation's previous one
    was acknowledged) is not in that statement's snapshot, so a claim that came back short after
    acks runs once more. A claim that saw a stale lease sweeps a batch of them afterwards (it frees
    nothing claimable at once: a swept job waits for its retry and holds its conversation). A
    claim that lost a conversation to a concurrent one is retried, never surfaced."""
    processor_id = domain.check_processor_id(processor_id)
    max_jobs = domain.check_max_jobs(max_jobs)
    lease = domain.check_lease(lease)
    domain.check_claim_count(len(job_ids))
    completed = domain.check_completions(completed, "completed")
    claimed = await _claim(deps, processor_id, max_jobs, lease, job_ids, completed)
    if claimed is None:
        # Still contended after CLAIM_ATTEMPTS: nothing claimed this time (the worker's next claim
        # proceeds), but the acks must not wait for it.
        return ClaimOutcome([], await _acknowledge(deps, processor_id, completed) if completed else [])
    refused = await _end_cancelled_acks(
        deps, processor_id, [c.job_id for c in completed if c.job_id not in claimed.acked]
    )
    jobs = claimed.jobs
    stale = claimed.stale_leases
    if claimed.acked and len(jobs) < max_jobs:
        more = await _claim(deps, processor_id, max_jobs - len(jobs), lease, job_ids, ())
        if more is not None:
            jobs, stale = sorted(jobs + more.jobs, key=lambda j: j.id), stale or more.stale_leases
    if stale:
        await requeue_stale_jobs(deps, INLINE_STALE_BATCH)
    return ClaimOutcome(jobs, refused)


async def _claim(
    deps: Deps,
    processor_id: str,
    max_jobs: int,
    lease: timedelta,
    job_ids: Sequence[uuid.UUID],
    completed: Sequence[Completion],
) -> store.Claimed | None:
    """None when every attempt lost to a concurrent claim (nothing was written)."""
    for _ in range(CLAIM_ATTEMPTS):
        now = deps.clock()
        try:
            return await store.claim_jobs(
                deps.db,
                processor_id=processor_id,
                max_jobs=max_jobs,
                now=now,
                locked_until=now + lease,
                legacy_cutoff=now - domain.LEGACY_STALE,
                job_ids=job_ids,
                completed=completed,
            )
        except store.ClaimConflict:
            continue
    return None


async def complete_jobs(deps: Deps, processor_id: str, completed: Sequence[Completion]) -> list[uuid.UUID]:
    """Many acknowledgements in one statement; answers the refused ones."""
    processor_id = domain.check_processor_id(processor_id)
    if not completed:
        raise InvalidArgument("completions", "must hold at least one job")
    return await _acknowledge(deps, processor_id, domain.check_completions(completed, "completions"))


async def _acknowledge(deps: Deps, processor_id: str, completed: Sequence[Completion]) -> list[uuid.UUID]:
    done = await store.complete_many(deps.db, completed, processor_id, deps.clock())
    return await _end_cancelled_acks(deps, processor_id, [c.job_id for c in completed if c.job_id not in done])


async def _end_cancelled_acks(deps: Deps, processor_id: str, refused: list[uuid.UUID]) -> list[uuid.UUID]:
    """The acks the hot statement refused: those of the caller's jobs whose cancellation was asked
    for end them cancelled (end_cancelled); the rest stay refused. Nothing to do (no transaction)
    in the usual case, where nothing was refused."""
    if not refused:
        return refused
    ended = {j.id for j in await end_cancelled(deps, refused, processor_id)}
    return [job_id for job_id in refused if job_id not in ended]


async def end_cancelled(deps: Deps, job_ids: Sequence[uuid.UUID], processor_id: str) -> list[Job]:
    """The holder acknowledged jobs whose cancellation was asked for: CANCELLED, never retried,
    with the event that fails (or, for a rollback, deletes) their replies, in one transaction."""
    now = deps.clock()
    async with deps.uow() as uow:
        ended = await store.end_cancelled(uow.conn, job_ids, processor_id, now)
        for job in ended:
            await _fail_placeholders_later(uow.conn, job, now)
        await uow.commit()
    if ended:
        deps.kick_outbox()
    return ended


async def heartbeat_job(deps: Deps, job_id: uuid.UUID, processor_id: str, lease: timedelta | None) -> Job:
    processor_id = domain.check_processor_id(processor_id)
    lease = domain.check_lease(lease)
    now = deps.clock()
    job = await store.heartbeat(deps.db, job_id, processor_id, now, now + lease)
    if job is None:
        raise _refusal(await store.get_job_direct(deps.db, job_id), processor_id, now, "heartbeat")
    return job


async def complete_job(deps: Deps, job_id: uuid.UUID, processor_id: str, model_used: str | None) -> Job:
    processor_id = domain.check_processor_id(processor_id)
    model_used = domain.check_model_used(model_used)
    now = deps.clock()
    job = await store.complete(deps.db, job_id, processor_id, model_used, now)
    if job is None:
        cancelled = await end_cancelled(deps, [job_id], processor_id)
        if cancelled:
            return cancelled[0]
        raise _refusal(await store.get_job_direct(deps.db, job_id), processor_id, now, "complete")
    return job


async def fail_job(
    deps: Deps, job_id: uuid.UUID, processor_id: str, reason: str | None, message: str | None
) -> Job:
    processor_id = domain.check_processor_id(processor_id)
    reason = domain.check_error_reason(reason)
    message = domain.truncate_error_message(message)
    now = deps.clock()
    async with deps.uow() as uow:
        job = await store.fail(uow.conn, job_id, processor_id, reason, message, now)
        if job is None:
            # The holder stopping a job whose cancellation was asked for: cancelled, not failed.
            cancelled = await store.end_cancelled(uow.conn, [job_id], processor_id, now)
            if not cancelled:
                raise _refusal(await store.get_job(uow.conn, job_id), processor_id, now, "fail")
            job = cancelled[0]
        await _fail_placeholders_later(uow.conn, job, now)
        await add_final_job_events(uow.conn, [job], now)  # job.failed (docs/webhooks.md)
        await uow.commit()
    deps.kick_outbox()
    return job


@dataclass(frozen=True)
class RetryOutcome:
    job: Job
    retry_scheduled: bool


async def retry_job(
    deps: Deps, job_id: uuid.UUID, processor_id: str, reason: str | None, message: str | None
) -> RetryOutcome:
    """Retryable failure: WAITING_RETRY with a backoff carried by RetryWorkflow, or FAILED
    with the worker's reason when the attempts are used up (domain.can_retry)."""
    processor_id = domain.check_processor_id(processor_id)
    reason = domain.check_error_reason(reason)
    message = domain.truncate_error_message(message)
    now = deps.clock()
    async with deps.uow() as uow:
        job = await store.lock_job(uow.conn, job_id)
        if job is None:
            raise NotFound("Job not found")
        if job.status is not JobStatus.PROCESSING or job.processor_id != processor_id:
            raise FailedPrecondition(domain.lease_refusal(job, processor_id, now, "retry"))
        if job.cancel_requested:
            # A job whose cancellation was asked for is never retried: no RetryWorkflow starts.
            (job,) = await store.end_cancelled(uow.conn, [job_id], processor_id, now)
            scheduled = False
        elif domain.can_retry(job.attempt_count):
            attempt = job.attempt_count + 1
            delay_s = retry_delay_s(attempt, deps.rng, base_s=deps.retry_base_s)
            job = await store.to_waiting_retry(
                uow.conn,
                job_id,
                attempt_count=attempt,
                next_attempt_at=now + timedelta(seconds=delay_s),
                reason=reason,
                message=message,
            )
            await _schedule_release(uow.conn, job, delay_s, now)
            scheduled = True
        else:
            job = await store.fail_held(uow.conn, job_id, reason, message, now)
            scheduled = False
        # A job waiting for its retry still holds its conversation: nothing became claimable. A
        # job failed for good handed its conversation over (the hand-over trigger, migration 0006, woke watchers).
        await _fail_placeholders_later(uow.conn, job, now)
        await add_final_job_events(uow.conn, [job], now)  # job.failed when out of attempts
        await uow.commit()
    deps.kick_outbox()
    return RetryOutcome(job, scheduled)


async def release_job(deps: Deps, job_id: uuid.UUID, attempt_count: int) -> tuple[Job, bool]:
    """RetryWorkflow's call after the backoff; a repeat (or a stale attempt) is a no-op."""
    attempt_count = domain.check_release_attempt(attempt_count)
    async with deps.uow() as uow:
        job = await store.release(uow.conn, job_id, attempt_count)
        if job is None:
            current = await store.get_job(uow.conn, job_id)
            if current is None:
                raise NotFound("Job not found")
            return current, False
        # Released, the job heads its conversation again: claimable now.
        await notify(uow.conn, PENDING_CHANNEL, job.conversation_id.hex)
        await uow.commit()
    return job, True


def _refusal(job: Job | None, processor_id: str, now: datetime, action: str) -> NotFound | FailedPrecondition:
    if job is None:
        return NotFound("Job not found")
    return FailedPrecondition(domain.lease_refusal(job, processor_id, now, action))


async def _fail_placeholders_later(conn: AsyncConnection, job: Job, now: datetime) -> None:
    """In the caller's transaction, for a job that just left PROCESSING without completing: the
    event that fails the placeholders its attempt left open.

    A job waiting for its retry gets a next attempt, which may link a new placeholder to the same
    job; a late (re-driven) delivery must not fail that one. The event therefore names only
    placeholders created before the middle of the backoff: the ended attempt's are older than
    `now`, the next attempt's newer than `next_attempt_at` (RetryWorkflow releases no earlier),
    so each side is half a backoff away from the fence, whatever small clock difference there is
    between the two services. A job failed for good has no next attempt: every open one goes."""
    job_ref = ids.JOB.format(job.id)
    created_before: datetime | None = None
    if job.status is JobStatus.WAITING_RETRY and job.next_attempt_at is not None:
        created_before = now + (job.next_attempt_at - now) / 2
    cancelled = job.status is JobStatus.CANCELLED
    payload: dict[str, object] = {
        "job_id": job_ref,
        "reason": domain.CANCELLED_REASON if cancelled else job.error_reason or "",
        "created_before": created_before.isoformat() if created_before is not None else None,
    }
    if cancelled and job.cancel_discards_reply:
        payload["discard"] = True  # a rollback deletes the job's replies instead (docs/double-texting.md)
    # One event per ended attempt: the attempt count moves on with each requeue.
    key = f"{job_ref}:{job.status.value}:{job.attempt_count}"
    await add_event(conn, outbox, FAIL_PLACEHOLDERS_TOPIC, key, payload, now)


async def _schedule_release(conn: AsyncConnection, job: Job, delay_s: float, now: datetime) -> None:
    job_ref = ids.JOB.format(job.id)
    await add_retry(
        conn,
        outbox,
        target=RELEASE_TARGET,
        entity_id=job_ref,
        attempt=job.attempt_count,
        request={"job_id": job_ref, "attempt_count": job.attempt_count},
        delay_s=delay_s,
        now=now,
    )


# --- stale leases ---


@dataclass(frozen=True)
class StaleSweep:
    requeued: int
    failed: int
    more: bool


async def requeue_stale_jobs(deps: Deps, batch_size: int) -> StaleSweep:
    """The "requeue stale agent jobs" schedule: one batch (0: the default size), one `now`."""
    limit = check_size(batch_size, domain.STALE_SWEEP, "batch_size")
    now = deps.clock()
    async with deps.uow() as uow:
        swept = await _sweep_stale(deps, uow.conn, now, limit)
        await uow.commit()
    if swept.requeued or swept.failed:
        deps.kick_outbox()
    return swept


async def _sweep_stale(deps: Deps, conn: AsyncConnection, now: datetime, limit: int) -> StaleSweep:
    """The original's stale-lease cleanup over up to `limit` stale leases, with the fixes:
    attempts left → WAITING_RETRY and a RetryWorkflow (docs/hardening.md #14); none left →
    FAILED `stale_lease`. Either way the crashed attempt's open placeholders are failed
    (docs/hardening.md #40)."""
    candidates = await sweeps.lock_stale_jobs(conn, now, now - domain.LEGACY_STALE, limit)
    failed: list[uuid.UUID] = []
    cancelled: list[uuid.UUID] = []
    requeues: list[sweeps.Requeue] = []
    for job in candidates:
        if not domain.is_job_stale(job, now):
            continue
        if job.cancel_requested:
            cancelled.append(job.id)  # its holder never acknowledged: cancelled, not retried
            continue
        if domain.resolve_stale_action(job.attempt_count) == "fail":
            failed.append(job.id)
            continue
        attempt = job.attempt_count + 1
        delay_s = retry_delay_s(attempt, deps.rng, base_s=deps.retry_base_s)
        requeues.append(sweeps.Requeue(job.id, attempt, now + timedelta(seconds=delay_s)))
        job_ref = ids.JOB.format(job.id)
        await add_retry(
            conn,
            outbox,
            target=RELEASE_TARGET,
            entity_id=job_ref,
            attempt=attempt,
            request={"job_id": job_ref, "attempt_count": attempt},
            delay_s=delay_s,
            now=now,
        )
    ended = await store.end_cancelled(conn, cancelled, None, now)
    ended += await sweeps.fail_stale(conn, failed, domain.STALE_LEASE_REASON, domain.STALE_LEASE_FAILED_MESSAGE, now)
    ended += await sweeps.requeue_stale(conn, requeues, domain.STALE_LEASE_REASON, domain.STALE_LEASE_RETRY_MESSAGE)
    # Requeued jobs still hold their conversations; failed ones handed them over (and woke their
    # watchers) through the hand-over trigger (migration 0006).
    for job in ended:
        await _fail_placeholders_later(conn, job, now)
    await add_final_job_events(conn, ended, now)  # job.failed for those out of attempts
    return StaleSweep(requeued=len(requeues), failed=len(failed) + len(cancelled), more=len(candidates) == limit)


# --- retention ---


@dataclass(frozen=True)
class Cleanup:
    deleted: int
    more: bool


async def cleanup_old_jobs(deps: Deps, older_than: timedelta | None, batch_size: int) -> Cleanup:
    """COMPLETED/FAILED jobs finished before now − `older_than` (default: the retention),
    by completion time (docs/hardening.md #20); one batch (0: the default size)."""
    keep = domain.retention(older_than)
    limit = check_size(batch_size, domain.CLEANUP_SWEEP, "batch_size")
    async with deps.uow() as uow:
        deleted = await sweeps.delete_finished_before(uow.conn, deps.clock() - keep, limit)
        await uow.commit()
    return Cleanup(deleted, more=deleted == limit)


# --- cancellation (docs/double-texting.md) ---


async def cancel_job(deps: Deps, user: ResolvedUser, job_id: uuid.UUID) -> Job:
    """A job of a conversation the caller owns (any job for an admin); someone else's job looks
    missing (docs/architecture.md §4)."""
    async with deps.uow() as uow:
        job = await store.get_job(uow.conn, job_id)
        owner = job is not None and user.owns(user_id=job.conversation_user_id, contact_id=job.conversation_contact_id)
        if job is None or not (owner or user.role is Role.ADMIN):
            raise NotFound("Job not found")
        job = await _cancel(deps, uow.conn, job_id, discard=False)
        await uow.commit()
    deps.kick_outbox()
    return job


async def cancel_job_as_service(deps: Deps, job_id: uuid.UUID, discard: bool) -> Job:
    async with deps.uow() as uow:
        job = await _cancel(deps, uow.conn, job_id, discard=discard)
        await uow.commit()
    deps.kick_outbox()
    return job


async def _cancel(deps: Deps, conn: AsyncConnection, job_id: uuid.UUID, *, discard: bool) -> Job:
    """The guarded cancel (store.cancel_set) and its wake-ups, in the caller's transaction."""
    now = deps.clock()
    job = await store.cancel_job(conn, job_id, discard, now)
    if job is None:
        current = await store.get_job(conn, job_id)
        if current is None:
            raise NotFound("Job not found")
        raise FailedPrecondition(domain.cancel_refusal(current))
    await _after_cancel(conn, [job], now)
    return job


@dataclass(frozen=True)
class ConversationCancel:
    conversation_id: uuid.UUID
    before_message_id: uuid.UUID
    # Messages whose EnqueueJob may still be on its way.
    message_ids: Sequence[uuid.UUID]
    conversation_user_id: uuid.UUID | None
    conversation_contact_id: uuid.UUID | None
    discard_reply: bool


async def cancel_conversation_jobs(deps: Deps, request: ConversationCancel) -> list[Job]:
    """Double-texting `interrupt`/`rollback`: the conversation's jobs older than the new message,
    including those not queued yet, cancelled in one transaction. Idempotent: a repeat matches
    only finished rows and changes nothing."""
    domain.check_cancel_messages(len(request.message_ids))
    older = sorted({m for m in request.message_ids if m < request.before_message_id})
    now = deps.clock()
    async with deps.uow() as uow:
        recorded = await store.cancel_by_messages(
            uow.conn,
            job_ids=[ids.JOB.new() for _ in older],
            message_ids=older,
            conversation_id=request.conversation_id,
            conversation_user_id=request.conversation_user_id,
            conversation_contact_id=request.conversation_contact_id,
            discard=request.discard_reply,
            now=now,
        )
        queued = await store.cancel_conversation_jobs(
            uow.conn, request.conversation_id, request.before_message_id, request.discard_reply, now
        )
        changed = {j.id: j for j in recorded + queued}  # the second statement sees the first's rows
        jobs = sorted(changed.values(), key=lambda j: j.id)
        await _after_cancel(uow.conn, jobs, now)
        await uow.commit()
    if jobs:
        deps.kick_outbox()
    return jobs


async def _after_cancel(conn: AsyncConnection, jobs: Sequence[Job], now: datetime) -> None:
    """Wake-ups and events of cancelled jobs: WatchPendingJobs re-reads (a pending count changed,
    or a holder must now stop: its snapshot names the job); a rollback's job finished at once has
    its earlier attempts' replies deleted. A job finished as head handed its conversation over
    through the hand-over trigger (migration 0006), which woke whom that concerns."""
    for conversation_id in sorted({j.conversation_id for j in jobs}):
        await notify(conn, PENDING_CHANNEL, conversation_id.hex)
    for job in jobs:
        if job.status is JobStatus.CANCELLED and job.cancel_discards_reply:
            await _fail_placeholders_later(conn, job, now)


async def list_active_jobs(deps: Deps, conversation_id: uuid.UUID) -> list[Job]:
    async with deps.uow() as uow:
        return await store.active_jobs(uow.conn, conversation_id, domain.MAX_ACTIVE_JOBS)


# --- user view and watches ---


# How many of a conversation's unfinished jobs IsConversationProcessing names (for CancelJob).
ACTIVE_JOBS_SHOWN = 10


async def is_conversation_processing(
    deps: Deps, user: ResolvedUser, conversation_id: uuid.UUID
) -> tuple[bool, list[uuid.UUID]]:
    """Whether the caller's conversation has unfinished jobs, and their ids, oldest first."""
    async with deps.uow() as uow:
        owners = await store.conversation_owners(uow.conn, conversation_id)
        if not _processing_for(user, owners):
            return False, []
        active = await store.active_jobs(uow.conn, conversation_id, ACTIVE_JOBS_SHOWN)
    return True, [job.id for job in active]


def _processing_for(user: ResolvedUser, owners: list[tuple[uuid.UUID | None, uuid.UUID | None, bool]]) -> bool:
    owned = any(user.owns(user_id=u, contact_id=c) for u, c, _ in owners)
    return owned and any(active for _, _, active in owners)


@dataclass(frozen=True)
class PendingSnapshot:
    claimable: list[Job]
    pending_count: int
    # (job id, holder) of the processing jobs whose cancellation was asked for.
    cancel_requested: tuple[tuple[uuid.UUID, str], ...] = ()

    def cancel_requested_of(self, processor_id: str) -> list[uuid.UUID]:
        """The jobs `processor_id` holds that it must stop (the job watch of docs/double-texting.md)."""
        return [job_id for job_id, holder in self.cancel_requested if holder == processor_id]


async def pending_snapshot(deps: Deps, max_jobs: int) -> PendingSnapshot:
    rows = await store.pending_snapshot(deps.db, max_jobs)
    return PendingSnapshot(rows.claimable, rows.pending_count, rows.cancel_requested)


async def watch_conversation_processing(
    deps: Deps, user: ResolvedUser, conversation_id: uuid.UUID
) -> AsyncIterator[bool]:
    """The current value, then each change (re-read on wake-ups and every `resync_s`)."""
    feed = feed_of(deps)
    last: bool | None = None
    async with feed.subscribe(JOBS_CHANNEL, conversation_id.hex) as subscription:
        while True:
            async with deps.uow() as uow:
                value = _processing_for(user, await store.conversation_owners(uow.conn, conversation_id))
            if value != last:
                last = value
                yield value
            await subscription.wait(feed.resync_s)


def feed_of(deps: Deps) -> ChangeFeed:
    if deps.feed is None:
        raise RuntimeError("watch RPCs need the change feed (built by app.build_server)")
    return deps.feed
