"""Transactional outbox: a service stores an event in the same transaction as its own rows;
after commit the relay delivers it to the owning peer's idempotent RPC, and re-drives whatever
is still undelivered (peer down, crash) with capped, jittered backoff. ARCHITECTURE.md §6.

Delivery is at-least-once; handlers call idempotent RPCs keyed by the event's natural key, so
the effect is exactly-once.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from zenthor.ids import OUTBOX_EVENT
from zenthor.logs import get_logger

log = get_logger("zenthor.outbox")

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 300.0
DEFAULT_BATCH = 100

Handler = Callable[[Mapping[str, Any]], Awaitable[None]]


class PermanentDeliveryError(Exception):
    """The peer rejected the event for good; retrying cannot help."""


def _is_permanent(error: Exception) -> bool:
    """A handler's own verdict, or a peer answering INVALID_ARGUMENT (the event itself is
    wrong). Every other failure (peer down, not built yet, misconfigured key) is retried with
    capped backoff: nothing is dropped that a deploy or a config fix could still deliver."""
    if isinstance(error, PermanentDeliveryError):
        return True
    return isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.INVALID_ARGUMENT


def outbox_table(metadata: sa.MetaData, schema: str) -> sa.Table:
    return sa.Table(
        "outbox",
        metadata,
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        # Natural idempotency key (e.g. the message id for EnqueueJob): one event per key.
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("payload", pg.JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.Column("dead_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.UniqueConstraint("topic", "key", name="outbox_topic_key_uq"),
        sa.Index(
            "outbox_due_idx",
            "next_attempt_at",
            postgresql_where=sa.text("delivered_at IS NULL AND dead_at IS NULL"),
        ),
        schema=schema,
    )


def create_outbox_table(bind: sa.engine.Connection, schema: str) -> None:
    """The outbox as every service's first migration creates it (table, unique key, due
    index), from the one definition above. Shape v1: change it only through a new migration."""
    outbox_table(sa.MetaData(), schema).create(bind)


def backoff_s(attempts: int, rng: random.Random | None = None) -> float:
    """Exponential with full jitter, capped: attempt 1 ≈ ≤0.5 s … ≤300 s."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2 ** max(attempts - 1, 0)))
    return (rng or random).uniform(ceiling / 2, ceiling)


async def add_event(
    conn: AsyncConnection, table: sa.Table, topic: str, key: str, payload: Mapping[str, Any], now: datetime
) -> None:
    """Stores an event inside the caller's transaction; a second event with the same
    (topic, key) is ignored, so retried use cases do not duplicate effects."""
    stmt = (
        pg.insert(table)
        .values(
            id=OUTBOX_EVENT.new(),
            topic=topic,
            key=key,
            payload=dict(payload),
            created_at=now,
            next_attempt_at=now,
        )
        .on_conflict_do_nothing(constraint="outbox_topic_key_uq")
    )
    await conn.execute(stmt)


class OutboxRelay:
    """Delivers due events. `kick()` after a commit delivers at once; a background loop
    re-drives failures. Several relays (replicas) can run: rows are claimed with SKIP LOCKED."""

    def __init__(
        self,
        engine: AsyncEngine,
        table: sa.Table,
        handlers: Mapping[str, Handler],
        *,
        poll_s: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._table = table
        self._handlers = dict(handlers)
        self._poll_s = poll_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def kick(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                while await self.drain_once() > 0:
                    pass
            except Exception:  # a DB hiccup must not kill the relay; next tick retries
                log.exception("outbox.relay_error")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def drain_once(self, batch: int = DEFAULT_BATCH) -> int:
        """Attempts every due event (up to `batch`) once; returns how many were attempted."""
        t = self._table
        now = self._clock()
        async with self._engine.connect() as conn, conn.begin():
            # Claim due events; a concurrent relay skips the rows this one holds.
            rows = (
                await conn.execute(
                    sa.select(t.c.id, t.c.topic, t.c.payload, t.c.attempts)
                    .where(t.c.delivered_at.is_(None), t.c.dead_at.is_(None), t.c.next_attempt_at <= now)
                    .order_by(t.c.next_attempt_at)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                await self._attempt(conn, row.id, row.topic, row.payload, row.attempts)
        return len(rows)

    async def _attempt(
        self, conn: AsyncConnection, event_id: uuid.UUID, topic: str, payload: Mapping[str, Any], attempts: int
    ) -> None:
        t = self._table
        handler = self._handlers.get(topic)
        now = self._clock()
        try:
            if handler is None:
                raise PermanentDeliveryError(f"no handler for topic {topic!r}")
            await handler(payload)
        except Exception as e:
            if _is_permanent(e):
                log.error("outbox.dead", topic=topic, event_id=str(event_id), error=str(e)[:500])
                await conn.execute(
                    sa.update(t).where(t.c.id == event_id).values(dead_at=now, attempts=attempts + 1, last_error=str(e)[:500])
                )
                return
            delay = backoff_s(attempts + 1)
            log.warning("outbox.retry", topic=topic, event_id=str(event_id), attempts=attempts + 1, in_s=round(delay, 2), error=str(e)[:200])
            await conn.execute(
                sa.update(t)
                .where(t.c.id == event_id)
                .values(attempts=attempts + 1, next_attempt_at=now + timedelta(seconds=delay), last_error=str(e)[:500])
            )
        else:
            await conn.execute(
                sa.update(t).where(t.c.id == event_id).values(delivered_at=now, attempts=attempts + 1)
            )
