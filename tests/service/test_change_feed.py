"""The change feed wakes watchers on commit only, per key, coalesced, over real Postgres."""

from __future__ import annotations

import asyncio

import pytest

from services.identity.store.tables import users
from tests.support.database import TestDatabase
from zenthor.config import ServiceName
from zenthor.db import UnitOfWork, create_engine
from zenthor.notify import ChangeFeed, notify

CHANNEL = "identity_test"


async def test_commit_wakes_the_watchers_of_that_key_and_rollback_does_not(db: TestDatabase) -> None:
    dsn = db.dsn_for(ServiceName.IDENTITY)
    feed = ChangeFeed(dsn, [CHANNEL])
    engine = create_engine(dsn)
    await feed.start()
    try:
        async with feed.subscribe(CHANNEL, "a") as watch_a, feed.subscribe(CHANNEL, "b") as watch_b, feed.subscribe(CHANNEL) as watch_all:
            async with UnitOfWork(engine) as uow:
                await notify(uow.conn, CHANNEL, "a")
                # rolled back: nobody hears it
            assert not await watch_a.wait(0.3)
            async with UnitOfWork(engine) as uow:
                for _ in range(50):
                    await notify(uow.conn, CHANNEL, "a")
                await uow.conn.execute(users.select().limit(1))
                await uow.commit()
            assert await watch_a.wait(5)
            assert await watch_all.wait(5)
            assert not await watch_b.wait(0.3)
            assert not await watch_a.wait(0.3)  # fifty notifications, one wake-up
    finally:
        await feed.stop()
        await engine.dispose()


async def test_many_streams_share_one_listening_connection(db: TestDatabase) -> None:
    dsn = db.dsn_for(ServiceName.IDENTITY)
    feed = ChangeFeed(dsn, [CHANNEL])
    await feed.start()
    try:
        before = db.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'")
        async with feed.subscribe(CHANNEL, "x"), feed.subscribe(CHANNEL, "y"), feed.subscribe(CHANNEL, "z"):
            after = db.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'")
        assert before == after == [(1,)]
    finally:
        await feed.stop()
    await asyncio.sleep(0)


LISTED = "identity_test_listed"


async def test_a_multi_key_channel_wakes_every_key_a_payload_lists_and_a_plain_channel_takes_it_whole(
    db: TestDatabase,
) -> None:
    dsn = db.dsn_for(ServiceName.IDENTITY)
    feed = ChangeFeed(dsn, [CHANNEL, LISTED], multi_key=[LISTED])
    engine = create_engine(dsn)
    await feed.start()
    try:
        async with (
            feed.subscribe(LISTED, "a") as listed_a,
            feed.subscribe(LISTED, "b") as listed_b,
            feed.subscribe(LISTED) as listed_all,
            feed.subscribe(CHANNEL, "a") as plain_a,
            feed.subscribe(CHANNEL, "a,b") as plain_ab,
            feed.subscribe(CHANNEL, "z") as plain_z,
        ):
            async with UnitOfWork(engine) as uow:
                await notify(uow.conn, LISTED, "a,b")
                await notify(uow.conn, CHANNEL, "a,b")
                await uow.commit()
            # One listener reads the notifications in commit order: once "z" is heard, the
            # earlier ones have been handled.
            async with UnitOfWork(engine) as uow:
                await notify(uow.conn, CHANNEL, "z")
                await uow.commit()
            assert await plain_z.wait(5)
            # (a set wake-up returns at once; the short timeout only ends the check of an unset one)
            assert [await w.wait(0.05) for w in (listed_a, listed_b, listed_all, plain_ab, plain_a)] == [
                True, True, True, True, False,
            ]
    finally:
        await feed.stop()
        await engine.dispose()


def test_a_multi_key_channel_must_be_listened_to() -> None:
    with pytest.raises(ValueError, match="multi-key"):
        ChangeFeed("postgresql://unused", [CHANNEL], multi_key=[LISTED])
