"""Turns a verified JWT subject into the user it acts for, with a cache that follows identity's
principal changes.

Identity NOTIFYs `PRINCIPAL_CHANGES` (payload: the Clerk external id) in the transaction that
changes a user's status, role or linked contact. Every process keeps ONE listening connection
(`PrincipalChanges`) that evicts the cached entry. A notification is sent at commit, but reaches
a listener a moment later, so before a cached answer is used the listener runs a barrier: a
`SELECT 1` on the listening connection. Postgres hands a listening session every notification
committed before a statement ahead of that statement's result, so once the barrier returns,
every change committed before the request arrived has evicted its entry (deactivation takes
effect on the very next call, docs/hardening.md #22). Concurrent lookups share one barrier.

While the listener is down (reconnecting with backoff) nothing evicts, so a cached answer is
trusted only for `UNFOLLOWED_TTL_S`; on every (re)connect the whole cache is dropped, since
changes may have been missed. "User not found" is never cached: a user who just signed up is
resolved on their next call.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import psycopg
from psycopg import sql

from zenthor.auth.principal import ResolvedUser
from zenthor.backoff import backoff_delay_s
from zenthor.db import libpq_url
from zenthor.logs import get_logger

log = get_logger("zenthor.auth.resolver")

PRINCIPAL_CHANGES = "zenthor_principals"
# How long a cached principal is trusted while no listener can evict it.
UNFOLLOWED_TTL_S = 1.0
# A barrier slower than this counts as a listener that is down (the request goes on unfollowed).
BARRIER_TIMEOUT_S = 1.0
# A process starts serving after this long even if the listener has not connected yet.
START_TIMEOUT_S = 10.0
RECONNECT_BASE_S = 0.2
RECONNECT_CAP_S = 10.0


class PrincipalResolver(Protocol):
    async def resolve(self, external_id: str) -> ResolvedUser | None: ...


class PrincipalChanges:
    """The one LISTEN connection of a process on `PRINCIPAL_CHANGES`: calls `on_change(external_id)`
    for each notification and `on_reset()` on every (re)connect; `barrier()` returns once every
    change committed before the call has been delivered."""

    def __init__(
        self,
        dsn: str,
        *,
        on_change: Callable[[str], None],
        on_reset: Callable[[], None],
        channel: str = PRINCIPAL_CHANGES,
        rng: random.Random | None = None,
    ) -> None:
        # LISTEN needs psycopg's own URL: an operator's `postgresql+asyncpg://` must work too.
        self._dsn = libpq_url(dsn)
        self._channel = channel
        self._on_change = on_change
        self._on_reset = on_reset
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None
        self._following = asyncio.Event()
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Future[None]] = []
        self._attempt = 0
        # The listening session in pg_stat_activity (operators, tests).
        self.backend_pid: int | None = None

    @property
    def following(self) -> bool:
        return self._following.is_set()

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> bool:
        """Starts listening; True when connected within `timeout_s` (else it keeps trying in the
        background and lookups run unfollowed meanwhile)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="principal-changes")
        return await self.wait_following(timeout_s)

    async def wait_following(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._following.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def barrier(self, timeout_s: float = BARRIER_TIMEOUT_S) -> bool:
        """True once every notification committed before this call has been handled; False when
        the listener is down or too slow to say."""
        if not self.following:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        except (TimeoutError, ConnectionError):
            return False
        return True

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._attempt += 1
                delay = backoff_delay_s(self._attempt, self._rng, base_s=RECONNECT_BASE_S, cap_s=RECONNECT_CAP_S)
                log.warning("principal_changes.reconnect", error=str(e)[:200], in_s=round(delay, 2))
                await asyncio.sleep(delay)

    async def _listen(self) -> None:
        """One connection's life: LISTEN, drop the cache, serve barriers until it fails."""
        try:
            async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as conn:
                conn.add_notify_handler(lambda note: self._on_change(note.payload))
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                self.backend_pid = conn.info.backend_pid
                # Anything may have changed while nobody listened: forget it all.
                self._on_reset()
                self._following.set()
                self._attempt = 0
                log.info("principal_changes.listening", channel=self._channel)
                await self._serve(conn)
        finally:
            self._following.clear()
            self._fail_waiters()

    async def _serve(self, conn: psycopg.AsyncConnection[Any]) -> NoReturn:
        """Idle until the socket has data (a notification, or the server hanging up) or a
        barrier is asked for; then one `SELECT 1` delivers what arrived and answers the barrier
        for every waiter registered before it was sent."""
        loop = asyncio.get_running_loop()
        fd = conn.fileno()
        while True:
            self._wake.clear()
            if not self._waiters:
                loop.add_reader(fd, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    loop.remove_reader(fd)
            waiters, self._waiters = self._waiters, []
            try:
                await conn.execute("SELECT 1")
            except BaseException:
                self._waiters = waiters + self._waiters
                raise
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _fail_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionError("principal change listener is down"))
                waiter.exception()  # retrieved here: a waiter that timed out never reads it


@dataclass
class _Entry:
    user: ResolvedUser
    cached_at: float


class CachingResolver:
    """Caches found principals: for `ttl_s` while `changes` follows identity's notifications
    (each hit behind a barrier), for at most `unfollowed_ttl_s` otherwise. Misses go to `inner`
    every time."""

    def __init__(
        self,
        inner: PrincipalResolver,
        ttl_s: float,
        *,
        changes_dsn: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
        unfollowed_ttl_s: float = UNFOLLOWED_TTL_S,
    ) -> None:
        self._inner = inner
        self._ttl = ttl_s
        self._unfollowed_ttl = min(ttl_s, unfollowed_ttl_s)
        self._clock = clock
        self._max = max_entries
        self._entries: dict[str, _Entry] = {}
        # A lookup stores its answer only if no change of that subject arrived while it read:
        # an eviction (or reset) drops the lookup's token, so a read that raced a change is not kept.
        self._loading: dict[str, object] = {}
        self.changes = (
            PrincipalChanges(changes_dsn, on_change=self.evict, on_reset=self.clear)
            if changes_dsn and ttl_s > 0
            else None
        )

    async def start(self) -> None:
        """Starts following identity's changes (a no-op without a database to listen on)."""
        if self.changes is not None and not await self.changes.start():
            log.warning("principal_changes.not_listening", note=f"cache answers trusted for {self._unfollowed_ttl} s")

    async def stop(self) -> None:
        if self.changes is not None:
            await self.changes.stop()

    def evict(self, external_id: str) -> None:
        self._entries.pop(external_id, None)
        self._loading.pop(external_id, None)

    def clear(self) -> None:
        self._entries.clear()
        self._loading.clear()

    async def resolve(self, external_id: str) -> ResolvedUser | None:
        if self._ttl <= 0:
            return await self._inner.resolve(external_id)
        if external_id in self._entries:
            ttl = self._ttl if self.changes is not None and await self.changes.barrier() else self._unfollowed_ttl
            # Looked up again: the barrier may have evicted it.
            entry = self._entries.get(external_id)
            if entry is not None and self._clock() - entry.cached_at < ttl:
                return entry.user
        token = self._loading[external_id] = object()
        cached_at = self._clock()
        try:
            user = await self._inner.resolve(external_id)
        finally:
            unchanged = self._loading.get(external_id) is token
            if unchanged:
                del self._loading[external_id]
        if unchanged and user is not None:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[external_id] = _Entry(user, cached_at)
        return user
