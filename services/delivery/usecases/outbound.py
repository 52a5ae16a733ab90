"""Outbound queue use cases: enqueue, claim, complete, fail, release, list, watch, stale sweep.

Every settled row leaves its side effects in the same transaction: a retry goes to
WAITING_RETRY with a RetryWorkflow start in the outbox (docs/hardening.md #14), a final
SENT/FAILED row marks its `messages` row through the outbox (docs/hardening.md #27), and the
account's watchers are woken.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
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
from zenthor.errors import FailedPrecondition, InvalidArgument
from zenthor.notify import notify
from zenthor.outbox import add_bundle
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


@dataclass(frozen=True)
class ClaimOutcome:
    claimed: list[Outbound]
    # Acknowledgements carried on the claim that were refused (CompleteOutboundMessages), in the
    # order sent.
    refused: list[uuid.UUID]


async def claim_outbound(
    deps: Deps,
    *,
    account_id: str,
    processor_id: str,
    channel: Channel,
    max_messages: int,
    lease: timedelta | None,
    completed: Sequence[uuid.UUID] = (),
) -> ClaimOutcome:
    """The caller's sent rows acknowledged first (so their recipients' next messages are
    claimable), then, for the holder of the account's WhatsApp lease only (docs/hardening.md #41;
    anyone else gets nothing and writes nothing), up to `max_messages` recipient heads leased
    (SKIP LOCKED) in one statement. A claim that saw expired claims of the account reclaims them
    afterwards, counting an attempt (docs/hardening.md #16)."""
    domain.check_free_id(account_id, "account_id")
    domain.check_free_id(processor_id, "processor_id")
    batch = domain.claim_batch(max_messages)
    lease_for = domain.claim_lease(lease)
    domain.check_ack_count(len(completed), "completed_ids")
    refused = await _acknowledge(deps, processor_id, completed) if completed else []
    now = deps.clock()
    # The lease row is share-locked for the statement: no takeover while this claim runs.
    found = await store.claim(
        deps.db,
        account_id=account_id,
        channel=channel,
        processor_id=processor_id,
        max_messages=batch,
        now=now,
        locked_until=now + lease_for,
    )
    # No wake-up for the claim itself: taking rows makes nothing claimable for others.
    if found.holds_lease and found.expired_claims:
        async with deps.uow() as uow:
            reclaimed = await store.reclaim_expired(
                uow.conn, now, account_id=account_id, batch=domain.SWEEP_BATCH.default,
                error_prefix=domain.LEASE_EXPIRED_ERROR,
            )
            events = await _settle(deps, uow.conn, reclaimed, now)
            await uow.commit()
        if events:
            deps.kick_outbox()
    return ClaimOutcome(found.rows, refused)


async def complete_outbound_messages(deps: Deps, processor_id: str, outbound_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Many rows SENT in one statement, each as CompleteOutbound would; answers the refused ones
    (guard failed, or unknown)."""
    domain.check_free_id(processor_id, "processor_id")
    if not outbound_ids:
        raise InvalidArgument("ids", "must hold at least one id")
    domain.check_ack_count(len(outbound_ids), "ids")
    return await _acknowledge(deps, processor_id, outbound_ids)


async def _acknowledge(deps: Deps, processor_id: str, outbound_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """One statement: the rows sent, their messages' outcome events, their recipients handed over."""
    done = await store.complete_many(deps.db, outbound_ids, processor_id, deps.clock())
    if done:
        deps.kick_outbox(MARK_DELIVERY_TOPIC)
    return [i for i in outbound_ids if i not in done]


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
    deps.kick_outbox(MARK_DELIVERY_TOPIC)
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
    """In the caller's transaction: schedules the retries of WAITING_RETRY rows and marks the
    messages of SENT/FAILED rows. A final row has already handed its recipient over to the next
    message (and woken the account's watchers) through migration 0006's trigger; a row waiting
    for its retry stays the head and frees nothing. Returns the rows as updated."""
    settled: dict[uuid.UUID, Outbound] = {}
    retry_times: dict[uuid.UUID, datetime] = {}
    outcomes: list[dict[str, str]] = []
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
            outcomes.append(
                {"outbound_id": ids.OUTBOUND.format(row.id), "message_id": ids.MESSAGE.format(row.message_id), "outcome": outcome}
            )
            settled[row.id] = row
    # One bundle row for the batch: every row here left PROCESSING once, by a guarded statement.
    await add_bundle(conn, outbox, MARK_DELIVERY_TOPIC, outcomes, now)
    await store.set_retry_times(conn, retry_times)
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
