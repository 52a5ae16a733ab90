"""Change feed for `Watch…` RPCs: Postgres LISTEN/NOTIFY as a wake-up hint only.

Writers call `notify(conn, channel, key)` inside their unit of work; Postgres delivers it at
commit, never for a rollback. Each process keeps ONE listening connection (`ChangeFeed`) that
fans wake-ups out to every open stream subscribed to that (channel, key). A wake-up carries no
data: a watcher re-reads its rows from the tables after its last seen position, so coalesced
or lost notifications (listener reconnect) cost a re-read, never a missed change. Watchers
also re-read every `resync_s` as a safety net.

A channel may be declared multi-key: its writers may list several keys in one payload,
comma-separated, so a statement that changes many keys sends one notification instead of one per
key (agent_queue's head hand-over, migration 0006). Its keys never contain a comma.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncConnection

from zenthor.db import libpq_url
from zenthor.logs import get_logger
from zenthor.shutdown import cancel_and_wait

log = get_logger("zenthor.notify")

ANY_KEY = "*"
RECONNECT_MAX_S = 5.0


async def notify(conn: AsyncConnection, channel: str, key: str) -> None:
    """Queues a wake-up for watchers of (channel, key); sent when the transaction commits.
    Postgres folds identical notifications of one transaction into one."""
    await conn.execute(sa.text("SELECT pg_notify(:channel, :key)"), {"channel": channel, "key": key})


class Subscription:
    """Wake-ups for one stream, coalesced: many notifications before a `wait` are one."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> bool:
        """True when woken, False when `timeout_s` passed (re-read anyway)."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
        except TimeoutError:
            return False
        finally:
            self._event.clear()
        return True


class ChangeFeed:
    """One LISTEN connection per process for `channels`, reconnecting with backoff.

    LISTEN lives as long as its session, so `dsn` must be a session of its own: the settings'
    `listen_url` (ZENTHOR_DATABASE_LISTEN_URL, else ZENTHOR_DATABASE_URL), never a PgBouncer in
    transaction mode, which would hand the session's server connection to other clients between
    statements and deliver the notifications to nobody."""

    def __init__(
        self, dsn: str | None, channels: Iterable[str], *, multi_key: Iterable[str] = (), resync_s: float = 5.0
    ) -> None:
        if not dsn:
            raise ValueError("the change feed needs ZENTHOR_DATABASE_LISTEN_URL or ZENTHOR_DATABASE_URL")
        # LISTEN needs psycopg's own URL: an operator's `postgresql+psycopg://` must work too.
        self._dsn = libpq_url(dsn)
        self._channels = tuple(channels)
        self._multi_key = frozenset(multi_key)
        if not self._multi_key <= set(self._channels):
            raise ValueError(f"multi-key channels {sorted(self._multi_key)} must be among the channels listened to")
        self.resync_s = resync_s
        self._subscribers: dict[tuple[str, str], set[Subscription]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="change-feed")
        await asyncio.wait_for(self._listening.wait(), timeout=10)

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task], what="change feed")
            self._task = None

    @asynccontextmanager
    async def subscribe(self, channel: str, key: str = ANY_KEY) -> AsyncIterator[Subscription]:
        """Subscribe before reading the current state, so no change slips in between."""
        if channel not in self._channels:
            raise ValueError(f"change feed does not listen on {channel!r}")
        subscription = Subscription()
        self._subscribers[(channel, key)].add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers[(channel, key)].discard(subscription)

    def _wake(self, channel: str, payload: str) -> None:
        keys = payload.split(",") if channel in self._multi_key else (payload,)
        for subscription in self._subscribers.get((channel, ANY_KEY), ()):
            subscription.wake()
        for key in keys:
            for subscription in self._subscribers.get((channel, key), ()):
                subscription.wake()

    def _wake_all(self) -> None:
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.wake()

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as conn:
                    for channel in self._channels:
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._listening.set()
                    # Anything may have changed while we were not listening: everyone re-reads.
                    self._wake_all()
                    delay = 0.1
                    async for note in conn.notifies():
                        self._wake(note.channel, note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("notify.reconnect", error=str(e)[:200], in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
