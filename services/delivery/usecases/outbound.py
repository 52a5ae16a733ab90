"""Outbound queue use cases: enqueue, claim, complete, fail, release, list, watch, stale sweep.

Every settled row leaves its side effects in the same transaction: a retry goes to
WAITING_RETRY with a RetryWorkflow start in the outbox (docs/hardening.md #14), a final
SENT/FAILED row marks its `messages` row through the outbox (docs/hardening.md #27), and the
account's watchers are woken.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from services.delivery.domain import outbound as domain
from services.delivery.domain.outbound import (
    MARK_DELIVERY_TOPIC,
    RELEASE_TARGET,
    Channel,
    Outbound,
    OutboundMetadata,
    OutboundStatus,
)
from services.delivery.store import outbound as store
from services.delivery.store import whatsapp as whatsapp_store
from services.delivery.store.tables import OUTBOUND_CHANGES, outbox
from services.delivery.usecases.deps import Deps
from zenthor import ids
from zenthor.errors import FailedPrecondition
from zenthor.notify import notify
from zenthor.outbox import add_event
from zenthor.pagination import Page, PageRequest, next_token
from zenthor.retries import add_retry, retry_delay_s

FINAL = (OutboundStatus.SENT, OutboundStatus.FAILED)


@dataclass(frozen=True)
class Enqueued:
    outbound: Outbound
    created: bool


async def enqueue_outbound(
    deps: Deps,
    *,
    channel: Channel,
    account_id: str | None,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID,
    to: str | None,
    content: str,
    metadata: OutboundMetadata | None,
) -> Enqueued:
    """Idempotent on (message_id, channel): a re-driven outbox event gets the existing row.
    Without an account id the row gets the deployment's, so it is claimable (docs/hardening.md #10)."""
    new = domain.new_outbound(
        channel=channel,
        account_id=deps.default_account_id if account_id is None else account_id,
        conversation_id=conversation_id,
        message_id=message_id,
        to=to,
        content=content,
        metadata=metadata,
    )
    now = deps.clock()
    async with deps.uow() as uow:
        await store.lock_recipient(uow.conn, new.account_id, new.channel, new.recipient_key)
        row = await store.insert_if_absent(uow.conn, ids.OUTBOUND.new(), new, now)
        if row is None:
            existing = await store.get_by_message(uow.conn, new.message_id, new.channel)
            assert existing is not None  # the unique key said it exists
            return Enqueued(existing, created=False)
        await notify(uow.conn, OUTBOUND_CHANGES, row.account_id)
        await uow.commit()
    return Enqueued(row, created=True)


async def claim_outbound(
    deps: Deps,
    *,
    account_id: str,
    processor_id: str,
    channel: Channel,
    max_messages: int,
    lease: timedelta | None,
) -> list[Outbound]:
    """One transaction, one `now`, for the holder of the account's WhatsApp lease only
    (docs/hardening.md #41; anyone else gets nothing and writes nothing): the account's expired
    claims are reclaimed counting an attempt (docs/hardening.md #16), then up to `max_messages`
    recipient heads are leased (SKIP LOCKED)."""
    domain.check_free_id(account_id, "account_id")
    domain.check_free_id(processor_id, "processor_id")
    batch = domain.claim_batch(max_messages)
    lease_for = domain.claim_lease(lease)
    now = deps.clock()
    async with deps.uow() as uow:
        # Share-locks the lease row until commit: no takeover while this claim runs.
        if not await store.holds_lease(uow.conn, account_id, processor_id, now):
            return []
        reclaimed = await store.reclaim_expired(
            uow.conn, now, account_id=account_id, batch=domain.SWEEP_BATCH.default, error_prefix=domain.LEASE_EXPIRED_ERROR
        )
        events = await _settle(deps, uow.conn, reclaimed, now)
        claimed = await store.claim(
            uow.conn,
            account_id=account_id,
            channel=channel,
            processor_id=processor_id,
            max_messages=batch,
            now=now,
            locked_until=now + lease_for,
        )
        # No wake-up for the claim itself: taking rows makes nothing claimable for others.
        await uow.commit()
    if events:
        deps.kick_outbox()
    return claimed


async def complete_outbound(deps: Deps, outbound_id: uuid.UUID, processor_id: str) -> Outbound | None:
    """SENT, by the lease holder from PROCESSING only (docs/hardening.md #15); None for an unknown id."""
    domain.check_free_id(processor_id, "processor_id")
    now = deps.clock()
    async with deps.uow() as uow:
        sent = await store.complete(uow.conn, outbound_id, processor_id, now)
        if sent is None:
            await _refuse(uow.conn, outbound_id, processor_id, now)
            return None
        await _settle(deps, uow.conn, [sent], now)
        await uow.commit()
    deps.kick_outbox()
    return sent


async def fail_outbound(
    deps: Deps, outbound_id: uuid.UUID, processor_id: str, error: str, retry: bool
) -> Outbound | None:
    """A failed send, by the lease holder from PROCESSING only: WAITING_RETRY with a backoff
    carried by RetryWorkflow, or FAILED when `retry` is false or at the 5-attempt cap, which
    `retry = true` cannot bypass (docs/hardening.md #14, #15). None for an unknown id, as the
    runtime expects."""
    domain.check_free_id(processor_id, "processor_id")
    now = deps.clock()
    async with deps.uow() as uow:
        failed = await store.fail(uow.conn, outbound_id, processor_id, domain.error_text(error), retry, now)
        if failed is None:
            await _refuse(uow.conn, outbound_id, processor_id, now)
            return None
        settled = await _settle(deps, uow.conn, [failed], now)
        await uow.commit()
    deps.kick_outbox()
    return settled.get(failed.id, failed)


async def release_outbound(deps: Deps, outbound_id: uuid.UUID, attempt_count: int) -> bool:
    """RetryWorkflow's call after the backoff: WAITING_RETRY → PENDING if the row is still
    waiting for that attempt; a duplicate or late release is a no-op."""
    now = deps.clock()
    async with deps.uow() as uow:
        released = await store.release(uow.conn, outbound_id, attempt_count, now)
        if released is None:
            return False
        await notify(uow.conn, OUTBOUND_CHANGES, released.account_id)
        await uow.commit()
    return True


async def list_pending_outbound(deps: Deps, conversation_id: uuid.UUID, page: PageRequest) -> Page[Outbound]:
    async with deps.uow() as uow:
        rows = await store.list_unfinished_in_conversation(uow.conn, conversation_id, page)
    return Page(rows, next_token([r.id for r in rows], page.size))


@dataclass(frozen=True)
class StaleSweep:
    requeued: int
    failed: int
    more: bool


async def requeue_stale_outbound(deps: Deps, batch_size: int) -> StaleSweep:
    """Scheduled sweep of every account's expired leases, the same path as the inline reclaim."""
    batch = domain.sweep_batch(batch_size)
    now = deps.clock()
    async with deps.uow() as uow:
        reclaimed = await store.reclaim_expired(
            uow.conn, now, account_id=None, batch=batch, error_prefix=domain.LEASE_EXPIRED_ERROR
        )
        await _settle(deps, uow.conn, reclaimed, now)
        await uow.commit()
    if reclaimed:
        deps.kick_outbox()
    failed = sum(1 for r in reclaimed if r.status is OutboundStatus.FAILED)
    return StaleSweep(requeued=len(reclaimed) - failed, failed=failed, more=len(reclaimed) == batch)


@dataclass(frozen=True)
class ClaimableCount:
    count: int
    observed_at: datetime


async def watch_outbound(deps: Deps, account_id: str, channel: Channel) -> AsyncIterator[ClaimableCount]:
    """The account's claimable count at once, whenever rows may have become claimable
    (enqueue, release, a recipient's message leaving for good; coalesced), and at least every
    `watch_heartbeat_s`: the egress claims while it is above zero and otherwise waits here
    instead of polling."""
    domain.check_free_id(account_id, "account_id")
    async with deps.feed.subscribe(OUTBOUND_CHANGES, account_id) as changes:
        last: ClaimableCount | None = None
        changed = True
        while True:
            now = deps.clock()
            async with deps.uow() as uow:
                count = await store.claimable_count(uow.conn, account_id, channel, now)
            # A wake-up is news even when the count is equal (a claimer that just drained the
            # queue learns that new rows arrived), unless there is nothing to claim either way.
            if (
                last is None
                or (changed and (count > 0 or last.count > 0))
                or count != last.count
                or (now - last.observed_at).total_seconds() >= deps.watch_heartbeat_s
            ):
                last = ClaimableCount(count, now)
                yield last
            changed = await changes.wait(deps.feed.resync_s)


# --- settling rows that left PROCESSING ---


async def _settle(deps: Deps, conn: AsyncConnection, rows: Iterable[Outbound], now: datetime) -> dict[uuid.UUID, Outbound]:
    """In the caller's transaction: schedules the retries of WAITING_RETRY rows, marks the
    messages of SENT/FAILED rows and wakes their accounts' watchers. Returns the rows as updated."""
    settled: dict[uuid.UUID, Outbound] = {}
    retry_times: dict[uuid.UUID, datetime] = {}
    for row in rows:
        if row.status is OutboundStatus.WAITING_RETRY:
            delay_s = retry_delay_s(row.attempt_count, deps.rng, base_s=deps.retry_base_s, cap_s=deps.retry_cap_s)
            outbound_ref = ids.OUTBOUND.format(row.id)
            await add_retry(
                conn,
                outbox,
                target=RELEASE_TARGET,
                entity_id=outbound_ref,
                attempt=row.attempt_count,
                request={"id": outbound_ref, "attempt_count": row.attempt_count},
                delay_s=delay_s,
                now=now,
            )
            retry_times[row.id] = now + timedelta(seconds=delay_s)
            settled[row.id] = replace(row, next_attempt_at=retry_times[row.id])
        elif row.status in FINAL:
            outcome = "delivered" if row.status is OutboundStatus.SENT else "failed"
            payload = {"message_id": ids.MESSAGE.format(row.message_id), "outcome": outcome}
            await add_event(conn, outbox, MARK_DELIVERY_TOPIC, ids.OUTBOUND.format(row.id), payload, now)
            settled[row.id] = row
    await store.set_retry_times(conn, retry_times)
    # A final row hands its recipient over to the next message; a row waiting for its retry
    # stays the head and frees nothing.
    left = [r for r in settled.values() if r.status in FINAL]
    await store.promote_next_heads(conn, left)
    for account_id in sorted({r.account_id for r in left}):
        await notify(conn, OUTBOUND_CHANGES, account_id)
    return settled


async def _refuse(conn: AsyncConnection, outbound_id: uuid.UUID, processor_id: str, now: datetime) -> None:
    """Why a guarded complete/fail matched nothing: unknown ids answer absent, as the
    runtime expects (docs/hardening.md #30); anything else is FAILED_PRECONDITION saying which
    guard failed (docs/hardening.md #15, #41)."""
    current = await store.get(conn, outbound_id)
    if current is None:
        return
    lease = await whatsapp_store.get_lease(conn, current.account_id)
    holds_lease = lease is not None and lease.owner_id == processor_id and lease.held_at(now)
    raise FailedPrecondition(domain.not_processing_reason(current, processor_id, holds_lease=holds_lease))
