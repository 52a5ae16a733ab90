"""Engines per service role, the unit of work every use case runs in, and the direct pool of the
hot paths (single statements in autocommit, docs/architecture.md §6)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine


def sqlalchemy_url(url: str) -> str:
    """Any postgres URL spelled for SQLAlchemy's psycopg 3 driver (it serves sync and async)."""
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same URL for psycopg (or libpq) itself: `postgresql+psycopg://` and
    `postgresql+asyncpg://` spellings lose their driver part, whatever an operator wrote."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def is_database_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database could not be reached or went away mid-call (a
    restart, a failover, a full pool) rather than that our statement was wrong: the caller
    should see UNAVAILABLE and retry, never INTERNAL."""
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig if error.orig is not None else error
    if isinstance(error, sa_exc.TimeoutError):  # no pooled connection within pool_timeout
        return True
    # psycopg: connection refused or lost, server shutting down or starting up (57P01, 57P03).
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError | ConnectionError)


# A pooled connection unused for this long is pinged before it is handed out (the server or a
# proxy may have closed it meanwhile); busy connections are never pinged. A connection the
# server dropped while in use fails its call as UNAVAILABLE, and the engine then replaces every
# connection opened before the failure (SQLAlchemy's pool invalidation on disconnect).
IDLE_PING_S = 30.0
# Connections are replaced after this long, so none outlives a proxy's or a firewall's limits.
RECYCLE_S = 1800


def create_engine(url: str, pool_size: int = 10, *, idle_ping_s: float = IDLE_PING_S) -> AsyncEngine:
    engine = create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping on every checkout: it was a round trip per use case (see IDLE_PING_S).
        pool_pre_ping=False,
        pool_recycle=RECYCLE_S,
        # Callers hold transactions briefly; a hung pool should surface as an error quickly.
        pool_timeout=10,
    )
    dialect = engine.sync_engine.dialect

    def checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    def ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        """A connection idle past IDLE_PING_S is pinged; a dead one makes the pool retry the
        checkout with a fresh connection (DisconnectionError)."""
        idle_since = record.info.pop("checked_in_at", None)
        if idle_since is None or time.monotonic() - idle_since < idle_ping_s:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as e:
            raise sa_exc.DisconnectionError("idle connection was closed by the server") from e

    event.listen(engine.sync_engine, "checkin", checked_in)
    event.listen(engine.sync_engine, "checkout", ping_if_idle)
    return engine


class UnitOfWork:
    """One transaction per use case: leaving the block without `commit()` rolls back."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._closing: AsyncExitStack | None = None
        self._committed = False

    @property
    def conn(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._conn

    async def __aenter__(self) -> UnitOfWork:
        # The connection is closed by its own context manager, which finishes the close even
        # when the task is cancelled meanwhile (a shutdown): a close cut short leaves the
        # connection checked out until the garbage collector finds it. A begin that fails
        # closes it here, since `async with` never exits a block it did not enter.
        async with AsyncExitStack() as stack:
            conn = await stack.enter_async_context(self._engine.connect())
            await conn.begin()
            self._closing = stack.pop_all()
        self._conn, self._committed = conn, False
        return self

    async def commit(self) -> None:
        await self.conn.commit()
        self._committed = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        closing, self._closing = self._closing, None
        assert conn is not None and closing is not None
        try:
            if not self._committed:
                await conn.rollback()
        finally:
            await closing.aclose()


UnitOfWorkFactory = Callable[[], UnitOfWork]


# --- the hot paths: psycopg directly ---

# Connection failures worth one more try on a fresh connection: the server (or a proxy) closed
# an idle pooled connection. Any other error is the statement's own and is raised at once.
_RETRIED_ONCE = (psycopg.OperationalError, psycopg.InterfaceError)

_T = TypeVar("_T")


class DirectPool:
    """psycopg's own pool of autocommit connections, for the few statements a worker sends per
    job (claim, acknowledge, heartbeat, enqueue). Each call is one statement and one round trip:
    no BEGIN/COMMIT (a single statement is its own transaction), no pre-ping (a connection the
    server dropped fails fast, the idle ones are checked and the statement runs once more on a
    fresh connection), no ORM layer. Statements are prepared server-side after their first use
    unless `prepare` is off (a PgBouncer in transaction mode hands a session different server
    connections).

    A prepared statement is planned once per connection (a generic plan) instead of at every
    execution: Postgres' default re-planned the acks-and-claim statement at every call, 1.2 ms
    each (README, Performance: "Plans made once"). The pool's statements find their rows by key
    or through partial indexes whose predicates are spelled in the SQL, never passed as
    parameters, so one plan serves every value."""

    def __init__(
        self, url: str, max_size: int, *, prepare: bool = True, min_size: int = 1, timeout_s: float = 10.0
    ) -> None:
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            libpq_url(url),
            min_size=min(min_size, max_size),
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "prepare_threshold": 0 if prepare else None},
            configure=_plan_once if prepare else None,
            # As the engine's pool_timeout: a starved pool (or a database that is down) surfaces as
            # UNAVAILABLE quickly.
            timeout=timeout_s,
            max_lifetime=RECYCLE_S,
            name="direct",
        )

    async def open(self) -> None:
        # Not waiting: a service starts (and answers UNAVAILABLE) while its database is down.
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    async def fetch(self, query: str, params: Mapping[str, Any] | Sequence[Any] | None = None) -> list[Any]:
        """Runs one statement in its own transaction; its rows as named tuples."""
        return await self._once_more_if_lost(lambda: self._fetch(query, params))

    async def _fetch(self, query: str, params: Mapping[str, Any] | Sequence[Any] | None) -> list[Any]:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=namedtuple_row)
            await cur.execute(query, params)
            return await cur.fetchall() if cur.description is not None else []

    async def read_together(self, statements: Sequence[tuple[str, Mapping[str, Any]]]) -> list[list[Any]]:
        """Runs read-only statements as of ONE snapshot and in ONE round trip: a REPEATABLE READ,
        READ ONLY transaction sent as a pipeline (BEGIN, the statements, COMMIT, one sync). For
        a watcher that needs several tables to agree; each statement's rows as named tuples."""
        return await self._once_more_if_lost(lambda: self._read_together(statements))

    async def _once_more_if_lost(self, attempt: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await attempt()
        except _RETRIED_ONCE as e:
            if isinstance(e, psycopg.errors.QueryCanceled) or not _connection_lost(e):
                raise
        # The connection was gone (a restart, an idle timeout): drop the other dead ones, retry once.
        await self._pool.check()
        return await attempt()

    async def _read_together(self, statements: Sequence[tuple[str, Mapping[str, Any]]]) -> list[list[Any]]:
        async with self._pool.connection() as conn:
            cursors = []
            async with conn.pipeline():
                # Transaction control is never prepared (and needs no plan).
                await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", prepare=False)
                for query, params in statements:
                    cur = conn.cursor(row_factory=namedtuple_row)
                    await cur.execute(query, params)
                    cursors.append(cur)
                await conn.execute("COMMIT", prepare=False)
            return [await cur.fetchall() for cur in cursors]


async def _plan_once(conn: psycopg.AsyncConnection[Any]) -> None:
    """A new pooled connection keeps one plan per prepared statement. Only with prepared
    statements: a PgBouncer in transaction mode (prepare off) would carry the setting over to
    other clients' sessions."""
    await conn.execute("SET plan_cache_mode = force_generic_plan", prepare=False)


def _connection_lost(error: BaseException) -> bool:
    """The server closed the connection (or refused a new one): nothing of the statement ran
    on it, so running it once more on another connection is safe."""
    if isinstance(error, psycopg.errors.AdminShutdown | psycopg.errors.CannotConnectNow):
        return True
    sqlstate = getattr(error, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith("08")
