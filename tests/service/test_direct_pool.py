"""The database connections of every service (zenthor/db.py) without a ping before each use: a
connection the server dropped is replaced, and a database that is down is UNAVAILABLE to callers,
never INTERNAL. The direct pool of the hot paths prepares its statements unless told not to (a
PgBouncer in transaction mode), and plans each once."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
import sqlalchemy as sa

from tests.support.database import TestDatabase
from tests.support.ports import free_port
from tests.support.waiting import eventually
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


async def test_prepared_statements_are_planned_once_not_at_every_execution(db: TestDatabase) -> None:
    pool = DirectPool(db.admin_dsn(), 1)
    await pool.open()
    try:
        # Postgres' default plans each of a statement's first five executions for its values.
        for n in range(6):
            await pool.fetch("SELECT relname FROM pg_class WHERE relpages > %(n)s ORDER BY oid LIMIT %(n)s", {"n": n})
        ((generic, custom),) = await pool.fetch(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE 'SELECT relname%%'"
        )
        assert (generic, custom) == (6, 0)
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


async def test_a_unit_of_work_that_fails_to_begin_returns_its_connection(db: TestDatabase) -> None:
    engine = create_engine(db.admin_dsn(), 1)

    def refuse(conn: sa.Connection) -> None:
        raise asyncio.CancelledError  # any failure to begin; this one is what a cancellation raises

    sa.event.listen(engine.sync_engine, "begin", refuse)
    try:
        uow = UnitOfWork(engine)
        with pytest.raises(asyncio.CancelledError):
            async with uow:
                pass
        # Returned at once, not when the garbage collector finds it after `uow` is gone.
        assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
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


async def test_statements_read_together_see_one_snapshot(db: TestDatabase) -> None:
    """A commit landing between the statements is invisible to the later ones (REPEATABLE READ):
    the watcher's conversation row and its messages agree. The second statement waits on an
    advisory lock that the test releases only after another session committed a new row."""
    db.sql("CREATE TABLE IF NOT EXISTS snapshot_probe (n int)")
    db.sql("TRUNCATE snapshot_probe")
    pool = DirectPool(db.admin_dsn(), 1)
    await pool.open()
    try:
        with psycopg.connect(db.admin_dsn(), autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(4242)")
            read = asyncio.ensure_future(
                pool.read_together([
                    ("SELECT count(*) AS n FROM snapshot_probe", {}),
                    ("SELECT pg_advisory_xact_lock_shared(4242)", {}),
                    ("SELECT count(*) AS n FROM snapshot_probe", {}),
                ])
            )
            # The reader is parked on the lock, inside its snapshot, when the row commits.
            await eventually(lambda: bool(db.sql("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")))
            db.sql("INSERT INTO snapshot_probe VALUES (1)")
            holder.execute("SELECT pg_advisory_unlock(4242)")
            before, _, after = await asyncio.wait_for(read, 30)
        assert (before[0].n, after[0].n) == (0, 0)
        assert (await pool.fetch("SELECT count(*) AS n FROM snapshot_probe"))[0].n == 1
    finally:
        await pool.close()


async def test_statements_read_together_run_on_a_fresh_connection_when_the_pooled_one_was_dropped(
    db: TestDatabase,
) -> None:
    pool = DirectPool(db.admin_dsn(), 1)
    await pool.open()
    try:
        ((first,),) = await pool.fetch("SELECT pg_backend_pid()")
        db.sql("SELECT pg_terminate_backend(%s)", (first,))
        [[(second,)], [(one,)]] = await pool.read_together([("SELECT pg_backend_pid()", {}), ("SELECT 1", {})])
        assert second != first and one == 1
    finally:
        await pool.close()


async def test_a_failed_statement_read_together_leaves_the_pooled_connection_usable(db: TestDatabase) -> None:
    pool = DirectPool(db.admin_dsn(), 1)
    await pool.open()
    try:
        with pytest.raises(psycopg.errors.DivisionByZero):
            await pool.read_together([("SELECT 1", {}), ("SELECT 1 / 0", {})])
        # Not left inside the aborted transaction: the next reads work on the same connection.
        [[(status,)]] = await pool.read_together([("SELECT 'ok'", {})])
        assert status == "ok"
        assert (await pool.fetch("SELECT 2 AS n"))[0].n == 2
    finally:
        await pool.close()
