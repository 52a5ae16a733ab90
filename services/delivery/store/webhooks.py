"""SQL of the completion webhooks: endpoints, the idempotent fan-out of an event into one
delivery per subscribed endpoint, the delivery log (attempts) and the guarded transitions of a
delivery (DELIVERED/FAILED only from PENDING of the same series; a redelivery only from a final
status)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.delivery.domain.webhooks import (
    ATTEMPTS_SHOWN,
    FINAL,
    JOB_EVENT_TYPES,
    Attempt,
    Delivery,
    DeliveryStatus,
    DeliveryTarget,
    Endpoint,
    EndpointChanges,
    Event,
    Subscription,
)
from services.delivery.store.tables import webhook_attempts as a
from services.delivery.store.tables import webhook_deliveries as d
from services.delivery.store.tables import webhook_endpoints as e
from services.delivery.store.tables import webhook_events as ev
from zenthor.db import DirectPool
from zenthor.pagination import PageRequest
from zenthor.webhooks import WebhookEventType

ENDPOINT_COLUMNS = (e.c.id, e.c.user_id, e.c.url, e.c.event_types, e.c.enabled, e.c.created_at, e.c.updated_at)
DELIVERY_COLUMNS = (
    d.c.id, d.c.endpoint_id, d.c.event_id, ev.c.type, d.c.status, d.c.series, d.c.created_at, d.c.updated_at,
    d.c.delivered_at, d.c.last_error,
)


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        id=row.id,
        user_id=row.user_id,
        url=row.url,
        event_types=tuple(WebhookEventType(t) for t in row.event_types),
        enabled=row.enabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _delivery(row: Any, attempts: Sequence[Attempt] = ()) -> Delivery:
    return Delivery(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event_type=WebhookEventType(row.type),
        status=DeliveryStatus(row.status),
        series=row.series,
        created_at=row.created_at,
        updated_at=row.updated_at,
        delivered_at=row.delivered_at,
        last_error=row.last_error,
        attempts=tuple(attempts),
    )


# --- endpoints ---


async def lock_user_endpoints(conn: AsyncConnection, user_id: uuid.UUID) -> int:
    """Serializes endpoint creation per user until commit (so the per-user cap holds under
    concurrent creates); answers how many endpoints the user has."""
    await conn.execute(
        sa.text("SELECT pg_advisory_xact_lock(hashtextextended('delivery.webhook_endpoints:' || :user_id, 0))"),
        {"user_id": str(user_id)},
    )
    return int((await conn.execute(sa.select(sa.func.count()).where(e.c.user_id == user_id))).scalar_one())


async def insert_endpoint(
    conn: AsyncConnection,
    endpoint_id: uuid.UUID,
    user_id: uuid.UUID,
    url: str,
    event_types: Sequence[WebhookEventType],
    secret: str,
    enabled: bool,
    now: datetime,
) -> Endpoint:
    row = (
        await conn.execute(
            sa.insert(e)
            .values(
                id=endpoint_id, user_id=user_id, url=url, event_types=[t.value for t in event_types], secret=secret,
                enabled=enabled, created_at=now, updated_at=now,
            )
            .returning(*ENDPOINT_COLUMNS)
        )
    ).one()
    return _endpoint(row)


async def get_endpoint(conn: AsyncConnection, endpoint_id: uuid.UUID, *, lock: bool = False) -> Endpoint | None:
    query = sa.select(*ENDPOINT_COLUMNS).where(e.c.id == endpoint_id)
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return _endpoint(row) if row else None


async def list_endpoints(conn: AsyncConnection, user_id: uuid.UUID | None, page: PageRequest) -> list[Endpoint]:
    """Oldest first; `user_id` None: every user's."""
    query = sa.select(*ENDPOINT_COLUMNS).order_by(e.c.id).limit(page.size)
    if user_id is not None:
        query = query.where(e.c.user_id == user_id)
    if page.after is not None:
        query = query.where(e.c.id > page.after)
    return [_endpoint(r) for r in (await conn.execute(query)).all()]


async def job_event_owners(conn: AsyncConnection, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
    """The users with an enabled endpoint for a job event type, in id order after `after`."""
    query = (
        sa.select(e.c.user_id)
        .distinct()
        .where(e.c.enabled, e.c.event_types.overlap(sorted(JOB_EVENT_TYPES)))
        .order_by(e.c.user_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(e.c.user_id > after)
    return [r.user_id for r in (await conn.execute(query)).all()]


async def update_endpoint(conn: AsyncConnection, endpoint_id: uuid.UUID, changes: EndpointChanges, now: datetime) -> Endpoint:
    values: dict[str, Any] = {"updated_at": now}
    if changes.url is not None:
        values["url"] = changes.url
    if changes.event_types is not None:
        values["event_types"] = [t.value for t in changes.event_types]
    if changes.enabled is not None:
        values["enabled"] = changes.enabled
    row = (await conn.execute(sa.update(e).where(e.c.id == endpoint_id).values(**values).returning(*ENDPOINT_COLUMNS))).one()
    return _endpoint(row)


async def set_secret(conn: AsyncConnection, endpoint_id: uuid.UUID, secret: str, now: datetime) -> Endpoint:
    row = (
        await conn.execute(
            sa.update(e).where(e.c.id == endpoint_id).values(secret=secret, updated_at=now).returning(*ENDPOINT_COLUMNS)
        )
    ).one()
    return _endpoint(row)


async def delete_endpoint(conn: AsyncConnection, endpoint_id: uuid.UUID) -> None:
    """Its deliveries and their attempts go with it (ON DELETE CASCADE)."""
    await conn.execute(sa.delete(e).where(e.c.id == endpoint_id))


# --- events and their fan-out (a batch of events per statement) ---


# The events of a whole batch as one JSON array: a fixed statement, compiled once, however many
# events it holds. A multi-row VALUES is compiled anew on every call and pays a bind parameter per
# cell, and a text[] parameter is escaped item by item in Python (event bodies are JSON, full of
# quotes); json.dumps and Postgres' JSON reader do the same in C.
_EVENT_ROWS = """
    SELECT v.id, v.type, v.owner_user_id, v.owner_contact_id, v.body, v.occurred_at
      FROM json_to_recordset(CAST({events} AS json))
           AS v(id text, type text, owner_user_id uuid, owner_contact_id uuid, body text, occurred_at timestamptz)
"""
_INSERT_EVENT = """
    INSERT INTO delivery.webhook_events (id, type, owner_user_id, owner_contact_id, body, occurred_at, created_at)
    SELECT r.id, r.type, r.owner_user_id, r.owner_contact_id, r.body, r.occurred_at, {now} FROM rows AS r
"""
INSERT_EVENTS = sa.text(
    f"""
    WITH rows AS ({_EVENT_ROWS.format(events=":events")})
    {_INSERT_EVENT.format(now=":now")}
    ON CONFLICT (id) DO NOTHING
    RETURNING id
    """
)

# The same insert for a batch none of whose owners has an endpoint for any of its types (most
# batches: most users register none), which then needs no deliveries: one statement on the direct
# pool, its own transaction, instead of a transaction of several through SQLAlchemy. When an
# endpoint may subscribe it stores nothing and says so, and the batch takes the whole fan-out.
INSERT_UNSUBSCRIBED_EVENTS = f"""
    WITH subscribed AS (
        SELECT 1 FROM delivery.webhook_endpoints
         WHERE user_id = ANY(CAST(%(owners)s AS uuid[])) AND enabled
           AND event_types && CAST(%(types)s AS text[])
         LIMIT 1
    ),
    rows AS ({_EVENT_ROWS.format(events="%(events)s")}),
    inserted AS (
        {_INSERT_EVENT.format(now="%(now)s")}
         WHERE NOT EXISTS (SELECT 1 FROM subscribed)
        ON CONFLICT (id) DO NOTHING
        RETURNING id
    )
    SELECT EXISTS (SELECT 1 FROM subscribed) AS subscribed, ARRAY(SELECT id FROM inserted) AS fresh
"""


# The deliveries of a whole batch from three arrays: one statement and three parameters however
# many there are (a multi-row VALUES would pay seven parameters a row).
INSERT_DELIVERIES = sa.text(
    f"""
    INSERT INTO delivery.webhook_deliveries (id, event_id, endpoint_id, status, series, created_at, updated_at)
    SELECT v.id, v.event_id, v.endpoint_id, '{DeliveryStatus.PENDING.value}', 1, :now, :now
      FROM unnest(CAST(:ids AS uuid[]), CAST(:event_ids AS text[]), CAST(:endpoint_ids AS uuid[]))
           AS v(id, event_id, endpoint_id)
    ON CONFLICT ON CONSTRAINT webhook_deliveries_event_endpoint_key DO NOTHING
    RETURNING id, event_id
    """
)


def _event_rows(events: Sequence[Event]) -> str:
    """The events as the statements above read them, in id order (json_to_recordset yields the
    array's order), so two batches sharing events lock them in the same order and cannot
    deadlock."""
    return json.dumps([
        {
            "id": x.id, "type": x.type.value, "body": x.body, "occurred_at": x.occurred_at.isoformat(),
            "owner_user_id": None if x.owner_user_id is None else str(x.owner_user_id),
            "owner_contact_id": None if x.owner_contact_id is None else str(x.owner_contact_id),
        }
        for x in sorted(events, key=lambda x: x.id)
    ])


async def insert_events_if_absent(conn: AsyncConnection, events: Sequence[Event], now: datetime) -> set[str]:
    """The ids of the events that are new; the others are repeats (their fan-out happened
    already)."""
    if not events:
        return set()
    return {r.id for r in (await conn.execute(INSERT_EVENTS, {"events": _event_rows(events), "now": now})).all()}


async def insert_unsubscribed_events(
    db: DirectPool, events: Sequence[Event], owners: Collection[uuid.UUID], now: datetime
) -> set[str] | None:
    """As insert_events_if_absent when no enabled endpoint of `owners` subscribes to any of the
    events' types; None, having stored nothing, when one may."""
    if not events:
        return set()
    params = {
        "owners": list(owners),
        "types": sorted({x.type.value for x in events}),
        "events": _event_rows(events),
        "now": now,
    }
    [row] = await db.fetch(INSERT_UNSUBSCRIBED_EVENTS, params)
    return None if row.subscribed else set(row.fresh)


async def subscriptions(
    conn: AsyncConnection, user_ids: Collection[uuid.UUID], event_types: Collection[WebhookEventType]
) -> list[Subscription]:
    """The enabled endpoints of these users that subscribe to any of these types, oldest first."""
    if not user_ids or not event_types:
        return []
    query = (
        sa.select(e.c.id, e.c.user_id, e.c.event_types)
        .where(
            e.c.user_id.in_(list(user_ids)),
            e.c.enabled,
            e.c.event_types.overlap(sa.cast(sorted(t.value for t in event_types), pg.ARRAY(sa.Text))),
        )
        .order_by(e.c.id)
    )
    return [
        Subscription(r.id, r.user_id, frozenset(WebhookEventType(t) for t in r.event_types))
        for r in (await conn.execute(query)).all()
    ]


async def insert_deliveries(
    conn: AsyncConnection, rows: Sequence[tuple[uuid.UUID, str, uuid.UUID]], now: datetime
) -> list[tuple[uuid.UUID, str]]:
    """(delivery id, event id, endpoint id) triples as PENDING deliveries of series 1; answers
    the (delivery id, event id) pairs stored."""
    if not rows:
        return []
    params = {
        "ids": [r[0] for r in rows], "event_ids": [r[1] for r in rows], "endpoint_ids": [r[2] for r in rows], "now": now,
    }
    return [(r.id, r.event_id) for r in (await conn.execute(INSERT_DELIVERIES, params)).all()]


# --- the delivery log ---


def _deliveries_query() -> sa.Select[Any]:
    return sa.select(*DELIVERY_COLUMNS).select_from(d.join(ev, ev.c.id == d.c.event_id))


async def _attempts_of(conn: AsyncConnection, delivery_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Attempt]]:
    """The newest ATTEMPTS_SHOWN attempts of each delivery, oldest first."""
    if not delivery_ids:
        return {}
    ranked = (
        sa.select(
            a,
            sa.func.row_number()
            .over(partition_by=a.c.delivery_id, order_by=(a.c.series.desc(), a.c.attempt.desc()))
            .label("newest"),
        )
        .where(a.c.delivery_id.in_(list(delivery_ids)))
        .subquery()
    )
    query = (
        sa.select(ranked)
        .where(ranked.c.newest <= ATTEMPTS_SHOWN)
        .order_by(ranked.c.delivery_id, ranked.c.series, ranked.c.attempt)
    )
    found: dict[uuid.UUID, list[Attempt]] = {}
    for r in (await conn.execute(query)).all():
        found.setdefault(r.delivery_id, []).append(
            Attempt(
                series=r.series, attempt=r.attempt, attempted_at=r.attempted_at, duration_ms=r.duration_ms,
                status_code=r.status_code, error=r.error, succeeded=r.succeeded,
            )
        )
    return found


async def list_deliveries(conn: AsyncConnection, endpoint_id: uuid.UUID, page: PageRequest) -> list[Delivery]:
    """Newest first (the page cursor is the last id seen), each with its attempts."""
    query = _deliveries_query().where(d.c.endpoint_id == endpoint_id).order_by(d.c.id.desc()).limit(page.size)
    if page.after is not None:
        query = query.where(d.c.id < page.after)
    rows = (await conn.execute(query)).all()
    attempts = await _attempts_of(conn, [r.id for r in rows])
    return [_delivery(r, attempts.get(r.id, ())) for r in rows]


async def get_delivery(conn: AsyncConnection, delivery_id: uuid.UUID) -> Delivery | None:
    row = (await conn.execute(_deliveries_query().where(d.c.id == delivery_id))).first()
    if row is None:
        return None
    attempts = await _attempts_of(conn, [row.id])
    return _delivery(row, attempts.get(row.id, ()))


async def delivery_target(conn: AsyncConnection, delivery_id: uuid.UUID) -> DeliveryTarget | None:
    query = (
        sa.select(d.c.status, d.c.series, e.c.url, e.c.secret, e.c.enabled, ev.c.id.label("event_id"), ev.c.body)
        .select_from(d.join(e, e.c.id == d.c.endpoint_id).join(ev, ev.c.id == d.c.event_id))
        .where(d.c.id == delivery_id)
    )
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    return DeliveryTarget(
        status=DeliveryStatus(row.status), series=row.series, url=row.url, secret=row.secret, event_id=row.event_id,
        body=row.body, endpoint_enabled=row.enabled,
    )


async def insert_attempt(conn: AsyncConnection, delivery_id: uuid.UUID, attempt: Attempt) -> bool:
    """False when that (series, attempt) was recorded already (a retried activity)."""
    stmt = (
        pg.insert(a)
        .values(
            delivery_id=delivery_id, series=attempt.series, attempt=attempt.attempt, attempted_at=attempt.attempted_at,
            duration_ms=attempt.duration_ms, status_code=attempt.status_code, error=attempt.error,
            succeeded=attempt.succeeded,
        )
        .on_conflict_do_nothing(constraint="webhook_attempts_pkey")
        .returning(a.c.delivery_id)
    )
    return (await conn.execute(stmt)).first() is not None


def _pending_of_series(delivery_id: uuid.UUID, series: int) -> list[sa.ColumnElement[bool]]:
    return [d.c.id == delivery_id, d.c.status == DeliveryStatus.PENDING.value, d.c.series == series]


async def mark_delivered(conn: AsyncConnection, delivery_id: uuid.UUID, series: int, now: datetime) -> bool:
    """PENDING → DELIVERED, only for the series being attempted."""
    stmt = (
        sa.update(d)
        .where(*_pending_of_series(delivery_id, series))
        .values(status=DeliveryStatus.DELIVERED.value, delivered_at=now, last_error=None, updated_at=now)
        .returning(d.c.id)
    )
    return (await conn.execute(stmt)).first() is not None


async def note_failed_attempt(conn: AsyncConnection, delivery_id: uuid.UUID, series: int, error: str | None, now: datetime) -> None:
    """A PENDING delivery's last error, as the log shows it while retries go on."""
    await conn.execute(
        sa.update(d).where(*_pending_of_series(delivery_id, series)).values(last_error=error, updated_at=now)
    )


async def mark_failed(conn: AsyncConnection, delivery_id: uuid.UUID, series: int, error: str | None, now: datetime) -> bool:
    """PENDING → FAILED, only for the series being attempted."""
    stmt = (
        sa.update(d)
        .where(*_pending_of_series(delivery_id, series))
        .values(status=DeliveryStatus.FAILED.value, last_error=error, updated_at=now)
        .returning(d.c.id)
    )
    return (await conn.execute(stmt)).first() is not None


async def current_status(conn: AsyncConnection, delivery_id: uuid.UUID) -> DeliveryStatus | None:
    row = (await conn.execute(sa.select(d.c.status).where(d.c.id == delivery_id))).first()
    return DeliveryStatus(row.status) if row else None


async def redeliver(conn: AsyncConnection, delivery_id: uuid.UUID, now: datetime) -> int | None:
    """DELIVERED/FAILED → PENDING under the next series; answers that series, None when the
    delivery is not final (its workflow is still at it)."""
    stmt = (
        sa.update(d)
        .where(d.c.id == delivery_id, d.c.status.in_([s.value for s in FINAL]))
        .values(
            status=DeliveryStatus.PENDING.value, series=d.c.series + 1, delivered_at=None, last_error=None,
            updated_at=now,
        )
        .returning(d.c.series)
    )
    row = (await conn.execute(stmt)).first()
    return int(row.series) if row else None


async def lock_owner_of_delivery(conn: AsyncConnection, delivery_id: uuid.UUID) -> uuid.UUID | None:
    """The user whose endpoint the delivery belongs to, the delivery locked (FOR SHARE) until
    the caller's transaction ends: the retention sweep cannot delete it in between, and one that
    deleted it first leaves nothing to find (NOT_FOUND, not a wrong-state answer)."""
    query = (
        sa.select(e.c.user_id)
        .select_from(d.join(e, e.c.id == d.c.endpoint_id))
        .where(d.c.id == delivery_id)
        .with_for_update(read=True, of=d)
    )
    row = (await conn.execute(query)).first()
    return row.user_id if row else None


# --- retention (CleanupWebhookEvents) ---


# Events stored before :before, none of whose deliveries is PENDING, at most :limit of them;
# their deliveries and attempts go with them (ON DELETE CASCADE). The second CTE locks the
# deliveries of the chosen events and reads their status as committed now: a redelivery
# committed after this statement's snapshot (a final delivery turned PENDING again) shows up
# there and keeps its event, and one not yet committed is waited for; a redelivery arriving
# after the lock finds its delivery gone. SKIP LOCKED: two sweeps at once share the work.
#
# No index on created_at, on purpose: every finished job inserts an event on the job queue's
# hot path, and this sweep runs once a day, where a scan of the table is affordable.
DELETE_OLD_EVENTS = sa.text(
    f"""
    WITH doomed AS (
        SELECT ev.id
          FROM delivery.webhook_events ev
         WHERE ev.created_at < :before
           AND NOT EXISTS (
                 SELECT 1 FROM delivery.webhook_deliveries d
                  WHERE d.event_id = ev.id AND d.status = '{DeliveryStatus.PENDING.value}')
         LIMIT :limit
           FOR UPDATE SKIP LOCKED
    ), their_deliveries AS (
        SELECT d.event_id, d.status
          FROM delivery.webhook_deliveries d
         WHERE d.event_id IN (SELECT id FROM doomed)
           FOR UPDATE
    )
    DELETE FROM delivery.webhook_events ev
     USING doomed
     WHERE ev.id = doomed.id
       AND NOT EXISTS (
             SELECT 1 FROM their_deliveries t
              WHERE t.event_id = ev.id AND t.status = '{DeliveryStatus.PENDING.value}')
    """
)


async def delete_old_events(conn: AsyncConnection, before: datetime, limit: int) -> int:
    """Deletes up to `limit` events stored before `before` that no PENDING delivery needs, with
    their deliveries and attempts; answers how many events."""
    result = await conn.execute(DELETE_OLD_EVENTS, {"before": before, "limit": limit})
    return int(result.rowcount)
