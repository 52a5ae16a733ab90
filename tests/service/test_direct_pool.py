"""The database connections of every service (zenthor/db.py) without a ping before each use: a
connection the server dropped is replaced, and a database that is down is UNAVAILABLE to callers,
never INTERNAL. The direct pool of the hot paths prepares its statements unless told not to (a
PgBouncer in transaction mode)."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from tests.conftest import free_port
from tests.support.database import TestDatabase
from zenthor.db import DirectPool, UnitOfWork, create_engine, is_database_unavailable


async def test_a_statement_runs_on_a_fresh_connection_when_the_server_dropped_the_pooled_one(db: TestDatabase) -> None:
    pool = DirectPool(db.admin_dsn(), 1)
    await pool.open()
    try:
        ((first,),) = await pool.fetch("SELECT pg_backend_pid()")
        db.sql("SELECT pg_terminate_backend(%s)", (first,))
        ((second,),) = await pool.fetch("SELECT pg_backend_pid()")
        assert second != first
    finally:
        await pool.close()


@pytest.mark.parametrize("prepare", [True, False])
async def test_prepared_statements_follow_the_setting(db: TestDatabase, prepare: bool) -> None:
    pool = DirectPool(db.admin_dsn(), 1, prepare=prepare)
    await pool.open()
    try:
        await pool.fetch("SELECT 1")
        ((prepared,),) = await pool.fetch("SELECT count(*) FROM pg_prepared_statements")
        assert (prepared > 0) is prepare
    finally:
        await pool.close()


async def test_a_database_that_is_down_is_unavailable_on_the_direct_pool() -> None:
    pool = DirectPool(f"postgresql://nobody@127.0.0.1:{free_port()}/none", 1, timeout_s=0.5)
    await pool.open()
    try:
        with pytest.raises(psycopg.OperationalError) as caught:
            await pool.fetch("SELECT 1")
        assert is_database_unavailable(caught.value)
    finally:
        await pool.close()


async def test_an_engine_connection_idle_past_the_ping_age_is_checked_and_replaced(db: TestDatabase) -> None:
    engine = create_engine(db.admin_dsn(), 1, idle_ping_s=0)
    try:
        async with UnitOfWork(engine) as uow:
            first = (await uow.conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        db.sql("SELECT pg_terminate_backend(%s)", (first,))
        async with UnitOfWork(engine) as uow:
            second = (await uow.conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        assert second != first
    finally:
        await engine.dispose()


async def test_an_engine_connection_dropped_while_busy_fails_once_as_unavailable_then_is_replaced(db: TestDatabase) -> None:
    engine = create_engine(db.admin_dsn(), 1)  # used a moment ago: not pinged
    try:
        async with UnitOfWork(engine) as uow:
            first = (await uow.conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        db.sql("SELECT pg_terminate_backend(%s)", (first,))
        with pytest.raises(Exception) as caught:
            async with UnitOfWork(engine) as uow:
                await uow.conn.execute(sa.text("SELECT 1"))
        assert is_database_unavailable(caught.value)
        async with UnitOfWork(engine) as uow:
            assert (await uow.conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one() != first
    finally:
        await engine.dispose()
