"""SQL of the outbound queue: idempotent enqueue, batch claim with SKIP LOCKED over recipient
heads (per-recipient FIFO) for the account's lease holder, guarded complete/fail/release (one row
or a batch), expired-lease reclaim. A head that leaves for good is handed over by migration
0006's trigger in the statement that finishes it. The claim runs alone on the direct pool (one
statement, one round trip); the rest inside a unit of work."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.delivery.domain.outbound import (
    MARK_DELIVERY_TOPIC,
    MAX_ATTEMPTS,
    MAX_ERROR_CHARS,
    UNFINISHED,
    Channel,
    NewOutbound,
    Outbound,
    OutboundMetadata,
    OutboundStatus,
)
from services.delivery.store.tables import outbound_messages as o
from services.delivery.store.tables import whatsapp_leases as leases
from zenthor.db import DirectPool
from zenthor.ids import MESSAGE, OUTBOUND, OUTBOX_EVENT
from zenthor.outbox import BUNDLE_KEY_SQL, bundle_sql
from zenthor.pagination import PageRequest

# The caller holds the account's WhatsApp lease now (docs/hardening.md #41). FOR SHARE: a
# takeover (an update of the lease row) waits until the claiming transaction commits, and a claim
# that meets a takeover in flight waits for it and re-checks the winner's row; so a sender whose
# lease was taken claims nothing, and two senders never both claim for one account.
HOLDS_LEASE = """
    SELECT l.account_id
      FROM delivery.whatsapp_leases AS l
     WHERE l.account_id = %(account_id)s AND l.owner_id = %(processor_id)s AND l.expires_at > %(now)s
       FOR SHARE
"""

# The claim: the oldest claimable rows of one account and channel, at most one per recipient,
# for the account's lease holder only. It also answers whether the caller holds the lease and
# whether any of the account's claims expired, so the use case reclaims those (in a transaction of
# its own) only when there are some: a reclaimed row waits for its retry and still heads its
# recipient, so reclaiming after the claim instead of before it changes no claim.
CLAIM = f"""
    WITH holder AS ({HOLDS_LEASE}),
    heads AS (
        -- pending recipient heads of the account and channel, oldest first (smallest
        -- created_at); a recipient whose head is in flight or waiting for its retry has none, so
        -- its messages go out one at a time in order and a failing one holds back only itself
        SELECT c.id
          FROM delivery.outbound_messages AS c
         WHERE c.account_id = %(account_id)s AND c.channel = %(channel)s AND c.status = 'pending' AND c.is_head
           -- nothing at all for a caller that does not hold the account's lease
           AND EXISTS (SELECT 1 FROM holder)
         ORDER BY c.created_at, c.id
         LIMIT %(max_messages)s
         -- concurrent claimers skip each other's rows instead of waiting (never the same row twice)
         FOR UPDATE SKIP LOCKED
    ),
    claimed AS (
        -- lease them to the caller
        UPDATE delivery.outbound_messages AS m
           SET status = 'processing', processor_id = %(processor_id)s, locked_until = %(locked_until)s,
               updated_at = %(now)s
          FROM heads
         WHERE m.id = heads.id
        RETURNING m.*
    ),
    seen AS (
        SELECT EXISTS (SELECT 1 FROM holder) AS holds_lease,
               EXISTS (SELECT 1 FROM delivery.outbound_messages AS x
                        WHERE x.status = 'processing' AND x.locked_until <= %(now)s
                          AND x.account_id = %(account_id)s) AS expired_claims
    )
    SELECT seen.holds_lease, seen.expired_claims, claimed.* FROM seen LEFT JOIN claimed ON true
"""

# What WatchOutbound reports: rows a claim would take now, plus expired leases a claim would reclaim.
CLAIMABLE_COUNT = sa.text(
    """
    SELECT count(*)
      FROM delivery.outbound_messages AS c
     WHERE c.account_id = :account_id AND c.channel = :channel
       AND ((c.status = 'pending' AND c.is_head)                     -- as CLAIM takes them
            OR (c.status = 'processing' AND c.locked_until <= :now))  -- expired (at locked_until itself)
    """
)

# Serializes the head bookkeeping of one recipient: an enqueue deciding whether its row is the
# head, and a head leaving for good handing over to the next row (migration 0006's trigger takes
# the same lock), never interleave (else a row queued while the head leaves could be left without
# a head forever). Held until commit.
LOCK_RECIPIENT = sa.text(
    "SELECT pg_advisory_xact_lock(hashtextextended(:account_id || chr(31) || :channel || chr(31) || :recipient_key, 0))"
)

# Informational: when each row given a retry becomes claimable (RetryWorkflow releases it).
SET_RETRY_TIMES = sa.text(
    """
    UPDATE delivery.outbound_messages AS m
       SET next_attempt_at = v.at
      FROM unnest(CAST(:ids AS uuid[]), CAST(:ats AS timestamptz[])) AS v(id, at)
     WHERE m.id = v.id AND m.status = 'waiting_retry'
    """
)


def _metadata(value: dict[str, Any] | None) -> OutboundMetadata | None:
    if value is None:
        return None
    return OutboundMetadata(kind=value["kind"], tool_name=value.get("tool_name"))


def _outbound(row: Any) -> Outbound:
    return Outbound(
        id=row.id,
        channel=Channel(row.channel),
        account_id=row.account_id,
        conversation_id=row.conversation_id,
        message_id=row.message_id,
        to=row.recipient,
        recipient_key=row.recipient_key,
        content=row.content,
        metadata=_metadata(row.metadata),
        status=OutboundStatus(row.status),
        processor_id=row.processor_id,
        locked_until=row.locked_until,
        attempt_count=row.attempt_count,
        last_error=row.last_error,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _holds_account_lease(processor_id: str, now: datetime) -> sa.ColumnElement[bool]:
    """The row's account is leased to `processor_id`, unexpired (docs/hardening.md #41): a sender
    whose lease was taken over (or lapsed) can no longer settle what it claimed."""
    return (
        sa.exists()
        .where(leases.c.account_id == o.c.account_id, leases.c.owner_id == processor_id, leases.c.expires_at > now)
    )


def _fifo(rows: Sequence[Any]) -> list[Outbound]:
    return sorted((_outbound(r) for r in rows), key=lambda x: (x.created_at, x.id))


async def lock_recipient(conn: AsyncConnection, account_id: str, channel: Channel, recipient_key: str) -> None:
    params = {"account_id": account_id, "channel": channel.value, "recipient_key": recipient_key}
    await conn.execute(LOCK_RECIPIENT, params)


async def insert_if_absent(conn: AsyncConnection, outbound_id: uuid.UUID, new: NewOutbound, now: datetime) -> Outbound | None:
    """None when (message_id, channel) is already queued. The new row heads its recipient's queue
    when the recipient has nothing else unfinished; call with the recipient locked."""
    metadata = (
        {"kind": new.metadata.kind, **({"tool_name": new.metadata.tool_name} if new.metadata.tool_name else {})}
        if new.metadata
        else None
    )
    has_head = (
        sa.select(o.c.id)
        .where(
            o.c.account_id == new.account_id,
            o.c.channel == new.channel.value,
            o.c.recipient_key == new.recipient_key,
            o.c.is_head,
        )
        .exists()
    )
    stmt = (
        pg.insert(o)
        .values(
            id=outbound_id,
            channel=new.channel.value,
            account_id=new.account_id,
            conversation_id=new.conversation_id,
            message_id=new.message_id,
            recipient=new.to,
            recipient_key=new.recipient_key,
            is_head=sa.not_(has_head),
            content=new.content,
            metadata=metadata,
            status=OutboundStatus.PENDING.value,
            attempt_count=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(constraint="outbound_messages_message_channel_key")
        .returning(o)
    )
    row = (await conn.execute(stmt)).first()
    return _outbound(row) if row else None


async def get_by_message(conn: AsyncConnection, message_id: uuid.UUID, channel: Channel) -> Outbound | None:
    row = (await conn.execute(sa.select(o).where(o.c.message_id == message_id, o.c.channel == channel.value))).first()
    return _outbound(row) if row else None


async def get(conn: AsyncConnection, outbound_id: uuid.UUID) -> Outbound | None:
    row = (await conn.execute(sa.select(o).where(o.c.id == outbound_id))).first()
    return _outbound(row) if row else None


async def reclaim_expired(
    conn: AsyncConnection, now: datetime, *, account_id: str | None, batch: int, error_prefix: str
) -> list[Outbound]:
    """Expired claim leases (`locked_until <= now`) of one account (any channel) or
    of every account: each counts a failed attempt (docs/hardening.md #16) and waits for its retry, or is
    FAILED at the cap. Rows a concurrent complete/fail holds are skipped: that call settles them."""
    stale = (
        sa.select(o.c.id)
        .where(o.c.status == OutboundStatus.PROCESSING.value, o.c.locked_until <= now)
        .order_by(o.c.locked_until)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    if account_id is not None:
        stale = stale.where(o.c.account_id == account_id)
    due = stale.cte("due")
    attempts = o.c.attempt_count + 1
    stmt = (
        sa.update(o)
        .where(o.c.id == due.c.id)
        .values(
            attempt_count=attempts,
            status=sa.case(
                (attempts >= MAX_ATTEMPTS, OutboundStatus.FAILED.value), else_=OutboundStatus.WAITING_RETRY.value
            ),
            is_head=attempts < MAX_ATTEMPTS,  # a FAILED row no longer heads its recipient
            last_error=sa.func.left(sa.literal(error_prefix) + o.c.processor_id, MAX_ERROR_CHARS),
            processor_id=None,
            locked_until=None,
            updated_at=now,
        )
        .returning(o)
    )
    return _fifo((await conn.execute(stmt)).all())


@dataclass(frozen=True)
class Claimed:
    rows: list[Outbound]
    # False: the caller does not hold the account's lease (nothing was claimed).
    holds_lease: bool
    # Some of the account's claims are past their lease: the caller reclaims them.
    expired_claims: bool


async def claim(
    db: DirectPool,
    *,
    account_id: str,
    channel: Channel,
    processor_id: str,
    max_messages: int,
    now: datetime,
    locked_until: datetime,
) -> Claimed:
    params = {
        "account_id": account_id,
        "channel": channel.value,
        "processor_id": processor_id,
        "max_messages": max_messages,
        "now": now,
        "locked_until": locked_until,
    }
    rows = await db.fetch(CLAIM, params)
    first = rows[0]
    return Claimed(_fifo([r for r in rows if r.id is not None]), first.holds_lease, first.expired_claims)


def _complete(ids: sa.ColumnElement[bool], processor_id: str, now: datetime) -> sa.Update:
    """PROCESSING → SENT, by the claim holder still holding the account's lease only
    (docs/hardening.md #15, #41). Clearing is_head hands the recipient over (migration 0006)."""
    return (
        sa.update(o)
        .where(
            ids,
            o.c.status == OutboundStatus.PROCESSING.value,
            o.c.processor_id == processor_id,
            _holds_account_lease(processor_id, now),
        )
        .values(
            status=OutboundStatus.SENT.value,
            is_head=False,
            processor_id=None,
            locked_until=None,
            last_error=None,
            updated_at=now,
        )
        .returning(o)
    )


async def complete(conn: AsyncConnection, outbound_id: uuid.UUID, processor_id: str, now: datetime) -> Outbound | None:
    """None when the guard fails."""
    row = (await conn.execute(_complete(o.c.id == outbound_id, processor_id, now))).first()
    return _outbound(row) if row else None


# Many rows SENT in one statement (the guard of _complete, row by row), and the outbox events that
# mark their messages delivered (docs/hardening.md #27) as one bundle row
# (zenthor.outbox.add_bundle): one round trip, and a row is never sent without its event.
# Clearing is_head hands each recipient over (migration 0006's trigger, once for the statement).
_MARKED_DELIVERED = f"""jsonb_build_object('outbound_id', {OUTBOUND.sql('sent.id')},
                                        'message_id', {MESSAGE.sql('sent.message_id')}, 'outcome', 'delivered')"""
COMPLETE_MANY = f"""
    WITH sent AS (
        UPDATE delivery.outbound_messages AS m
           SET status = 'sent', is_head = false, processor_id = NULL, locked_until = NULL, last_error = NULL,
               updated_at = %(now)s
         WHERE m.id = ANY(CAST(%(ids)s AS uuid[])) AND m.status = 'processing' AND m.processor_id = %(processor_id)s
           AND EXISTS (SELECT 1 FROM delivery.whatsapp_leases AS l
                        WHERE l.account_id = m.account_id AND l.owner_id = %(processor_id)s
                          AND l.expires_at > %(now)s)
        RETURNING m.id, m.message_id
    ),
    marked AS (
        INSERT INTO delivery.outbox (id, topic, key, payload, created_at, next_attempt_at)
        SELECT %(event_id)s, %(topic)s, {BUNDLE_KEY_SQL}, {bundle_sql(_MARKED_DELIVERED, "sent.id")}, %(now)s, %(now)s
          FROM sent
        HAVING count(*) > 0
    )
    SELECT id FROM sent
"""


async def complete_many(db: DirectPool, outbound_ids: Sequence[uuid.UUID], processor_id: str, now: datetime) -> set[uuid.UUID]:
    """The ids marked sent; the others failed the guard."""
    params = {
        "ids": list(outbound_ids),
        "event_id": OUTBOX_EVENT.new(),
        "processor_id": processor_id,
        "now": now,
        "topic": MARK_DELIVERY_TOPIC,
    }
    return {r.id for r in await db.fetch(COMPLETE_MANY, params)}


async def fail(
    conn: AsyncConnection, outbound_id: uuid.UUID, processor_id: str, error: str, retry: bool, now: datetime
) -> Outbound | None:
    """PROCESSING → WAITING_RETRY, or FAILED when told not to retry or at the attempt cap that
    `retry` cannot bypass (docs/hardening.md #15); the claim holder still holding the account's
    lease only (docs/hardening.md #41). None when that guard fails."""
    attempts = o.c.attempt_count + 1
    gives_up = sa.or_(sa.literal(not retry), attempts >= MAX_ATTEMPTS)
    row = (
        await conn.execute(
            sa.update(o)
            .where(
                o.c.id == outbound_id,
                o.c.status == OutboundStatus.PROCESSING.value,
                o.c.processor_id == processor_id,
                _holds_account_lease(processor_id, now),
            )
            .values(
                attempt_count=attempts,
                status=sa.case((gives_up, OutboundStatus.FAILED.value), else_=OutboundStatus.WAITING_RETRY.value),
                is_head=sa.not_(gives_up),
                last_error=error,
                processor_id=None,
                locked_until=None,
                updated_at=now,
            )
            .returning(o)
        )
    ).first()
    return _outbound(row) if row else None


async def set_retry_times(conn: AsyncConnection, times: dict[uuid.UUID, datetime]) -> None:
    if times:
        await conn.execute(SET_RETRY_TIMES, {"ids": list(times), "ats": list(times.values())})


async def release(conn: AsyncConnection, outbound_id: uuid.UUID, attempt_count: int, now: datetime) -> Outbound | None:
    """WAITING_RETRY → PENDING, fenced by the attempt the retry was scheduled for: a duplicate or
    late release (the row moved on) changes nothing."""
    row = (
        await conn.execute(
            sa.update(o)
            .where(
                o.c.id == outbound_id,
                o.c.status == OutboundStatus.WAITING_RETRY.value,
                o.c.attempt_count == attempt_count,
            )
            .values(status=OutboundStatus.PENDING.value, next_attempt_at=None, updated_at=now)
            .returning(o)
        )
    ).first()
    return _outbound(row) if row else None


async def claimable_count(conn: AsyncConnection, account_id: str, channel: Channel, now: datetime) -> int:
    params = {"account_id": account_id, "channel": channel.value, "now": now}
    return int((await conn.execute(CLAIMABLE_COUNT, params)).scalar_one())


async def list_unfinished_in_conversation(
    conn: AsyncConnection, conversation_id: uuid.UUID, page: PageRequest
) -> list[Outbound]:
    """PENDING, PROCESSING and WAITING_RETRY rows, oldest first (UUIDv7 ids are creation order)."""
    query = sa.select(o).where(o.c.conversation_id == conversation_id, o.c.status.in_([s.value for s in UNFINISHED]))
    if page.after is not None:
        query = query.where(o.c.id > page.after)
    rows = (await conn.execute(query.order_by(o.c.id).limit(page.size))).all()
    return [_outbound(r) for r in rows]
