"""Engines per service role and the unit of work every use case runs in."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

import psycopg
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


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # Callers hold transactions briefly; a hung pool should surface as an error quickly.
        pool_timeout=10,
    )


class UnitOfWork:
    """One transaction per use case: leaving the block without `commit()` rolls back."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._committed = False

    @property
    def conn(self) -> AsyncConnection:
        if self._conn is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._conn

    async def __aenter__(self) -> UnitOfWork:
        self._conn = await self._engine.connect()
        await self._conn.begin()
        self._committed = False
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
        assert conn is not None
        try:
            if not self._committed:
                await conn.rollback()
        finally:
            await conn.close()


UnitOfWorkFactory = Callable[[], UnitOfWork]
