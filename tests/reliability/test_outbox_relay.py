"""The outbox relay calls peers outside any transaction, per topic and concurrently, caps
attempts into dead letters an operator can list and re-drive, and re-delivers what a crashed
relay had leased (zenthor/outbox.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.database import TestDatabase
from tests.support.waiting import eventually
from zenthor.__main__ import main as zenthor_cli
from zenthor.config import ServiceName
from zenthor.db import UnitOfWork, create_engine
from zenthor.outbox import (
    DEAD_LETTER_INDEX,
    LEASE,
    OutboxRelay,
    add_event,
    dead_letters,
    outbox_table,
    redrive,
)

OUTBOX = outbox_table(sa.MetaData(), "identity")
WAIT_S = 20.0


@pytest.fixture
async def engine(db: TestDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db.dsn_for(ServiceName.IDENTITY))
    yield engine
    await engine.dispose()


async def store(engine: AsyncEngine, topic: str, keys: list[str], now: datetime | None = None) -> None:
    async with UnitOfWork(engine) as uow:
        for key in keys:
            await add_event(uow.conn, OUTBOX, topic, key, {"key": key}, now or datetime.now(UTC))
        await uow.commit()


def delivered(db: TestDatabase, topic: str) -> int:
    [(count,)] = db.sql("SELECT count(*) FROM identity.outbox WHERE topic = %s AND delivered_at IS NOT NULL", (topic,))
    return int(count)


async def test_a_peer_that_is_up_gets_its_events_while_another_hangs(engine: AsyncEngine, db: TestDatabase) -> None:
    released = asyncio.Event()
    entered = asyncio.Event()

    async def hanging_peer(payload: Mapping[str, Any]) -> None:
        entered.set()
        await released.wait()

    seen: list[str] = []

    async def healthy_peer(payload: Mapping[str, Any]) -> None:
        seen.append(payload["key"])

    relay = OutboxRelay(engine, OUTBOX, {"slow": hanging_peer, "fast": healthy_peer}, poll_s=0.05)
    await store(engine, "slow", ["s1", "s2"])
    relay.start()
    try:
        await asyncio.wait_for(entered.wait(), WAIT_S)
        await store(engine, "fast", ["f1", "f2", "f3"])
        relay.kick()
        await eventually(lambda: delivered(db, "fast") == 3, WAIT_S, "fast topic delivered")
        assert sorted(seen) == ["f1", "f2", "f3"]
        # The hanging call holds no transaction open.
        idle = db.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'"
        )
        assert idle == [(0,)]
        released.set()
        await eventually(lambda: delivered(db, "slow") == 2, WAIT_S, "slow topic delivered")
    finally:
        released.set()
        await relay.stop()


async def test_events_of_one_topic_are_delivered_concurrently(engine: AsyncEngine, db: TestDatabase) -> None:
    # Sixteen calls that each wait for all sixteen: only concurrent delivery can finish.
    barrier = asyncio.Barrier(16)

    async def peer(payload: Mapping[str, Any]) -> None:
        await asyncio.wait_for(barrier.wait(), WAIT_S)

    await store(engine, "t", [f"k{i}" for i in range(16)])
    relay = OutboxRelay(engine, OUTBOX, {"t": peer}, concurrency=16)
    assert await relay.drain_once() == 16
    assert delivered(db, "t") == 16


async def test_attempts_are_capped_into_a_dead_letter_that_can_be_redriven(engine: AsyncEngine, db: TestDatabase) -> None:
    clock = [datetime.now(UTC)]
    failing = [True]
    calls: list[str] = []

    async def peer(payload: Mapping[str, Any]) -> None:
        calls.append(payload["key"])
        if failing[0]:
            raise ConnectionError("peer down")

    relay = OutboxRelay(engine, OUTBOX, {"t": peer}, clock=lambda: clock[0], max_attempts=3)
    await store(engine, "t", ["k"], clock[0])
    for _ in range(3):
        assert await relay.drain_once() == 1
        clock[0] += timedelta(hours=1)
    assert await relay.drain_once() == 0
    [letter] = await dead_letters(engine, OUTBOX)
    assert letter.attempts == 3 and letter.last_error is not None and "gave up after 3 attempts" in letter.last_error

    failing[0] = False
    assert await redrive(engine, OUTBOX, topic="t", now=clock[0]) == 1
    assert await relay.drain_once() == 1
    assert delivered(db, "t") == 1 and calls == ["k"] * 4
    assert await dead_letters(engine, OUTBOX) == []


async def test_events_a_crashed_relay_had_leased_go_out_after_the_lease(engine: AsyncEngine, db: TestDatabase) -> None:
    clock = [datetime.now(UTC)]
    await store(engine, "t", ["k"], clock[0])
    stuck = asyncio.Event()

    async def never_returns(payload: Mapping[str, Any]) -> None:
        stuck.set()
        await asyncio.Event().wait()

    crashed = OutboxRelay(engine, OUTBOX, {"t": never_returns}, clock=lambda: clock[0])
    task = asyncio.create_task(crashed.drain_once())
    await asyncio.wait_for(stuck.wait(), WAIT_S)
    task.cancel()  # the relay dies holding its lease

    seen: list[str] = []

    async def peer(payload: Mapping[str, Any]) -> None:
        seen.append(payload["key"])

    survivor = OutboxRelay(engine, OUTBOX, {"t": peer}, clock=lambda: clock[0])
    assert await survivor.drain_once() == 0  # still leased
    clock[0] += LEASE + timedelta(seconds=1)
    assert await survivor.drain_once() == 1
    assert seen == ["k"] and delivered(db, "t") == 1


async def test_the_operator_cli_lists_and_redrives_dead_letters(
    engine: AsyncEngine, db: TestDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    await store(engine, "orphan", ["k"])  # no handler: a dead letter at once
    relay = OutboxRelay(engine, OUTBOX, {"t": lambda payload: asyncio.sleep(0)})
    assert await relay.drain_once() == 1
    assert await asyncio.to_thread(zenthor_cli, ["outbox", "list", "--service", "identity", "--dsn", db.admin_dsn()]) == 0
    listed = capsys.readouterr().out
    assert "orphan" in listed and "no handler" in listed and "1 dead letter(s)" in listed
    assert await asyncio.to_thread(
        zenthor_cli, ["outbox", "redrive", "--service", "identity", "--topic", "orphan", "--dsn", db.admin_dsn()]
    ) == 0
    assert "re-driven: 1 event(s)" in capsys.readouterr().out
    assert db.sql("SELECT dead_at IS NULL, attempts FROM identity.outbox") == [(True, 0)]


class CountingRelay(OutboxRelay):
    """Counts each topic's rounds, begun and finished."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.begun: dict[str | None, int] = {}
        self.finished: dict[str | None, int] = {}

    async def drain_topic(self, topic: str | None, batch: int = 100) -> int:
        self.begun[topic] = self.begun.get(topic, 0) + 1
        try:
            return await super().drain_topic(topic, batch)
        finally:
            self.finished[topic] = self.finished.get(topic, 0) + 1


async def accept(payload: Mapping[str, Any]) -> None:
    return None


async def sleeping_relay(engine: AsyncEngine, poll_s: float) -> CountingRelay:
    """A relay for topics "a" and "b", started, once both loops finished their first (empty)
    round and sleep."""
    relay = CountingRelay(engine, OUTBOX, {"a": accept, "b": accept}, poll_s=poll_s)
    relay.start()
    try:
        await eventually(lambda: relay.finished.get("a") == 1 and relay.finished.get("b") == 1, WAIT_S, "first rounds done")
    except BaseException:
        await relay.stop()
        raise
    return relay


async def test_a_kick_naming_topics_wakes_only_those(engine: AsyncEngine, db: TestDatabase) -> None:
    # A hot path kicks the topic it wrote; the other topics' loops stay asleep (no empty lease
    # each) until their own kick or poll, and the poll never comes within this test.
    relay = await sleeping_relay(engine, poll_s=3600)
    try:
        await store(engine, "a", ["a1"])
        await store(engine, "b", ["b1"])
        relay.kick("a")
        await eventually(lambda: delivered(db, "a") == 1, WAIT_S, "a delivered")
        assert relay.begun["b"] == 1 and delivered(db, "b") == 0
        relay.kick()  # no topic named: every topic
        await eventually(lambda: delivered(db, "b") == 1, WAIT_S, "b delivered")
    finally:
        await relay.stop()


async def test_events_nobody_kicked_for_are_found_by_the_poll(engine: AsyncEngine, db: TestDatabase) -> None:
    # Another replica's commit, or a retry whose backoff ran out: no kick reaches this relay, and
    # its one due-topics query per tick wakes the topic that has something due.
    relay = await sleeping_relay(engine, poll_s=0.05)
    try:
        await store(engine, "b", ["b1"])
        await eventually(lambda: delivered(db, "b") == 1, WAIT_S, "b delivered by the poll")
        assert relay.begun["a"] == 1  # nothing due for a: its loop was never woken
    finally:
        await relay.stop()


# --- retention: delivered events are deleted after RETENTION, nothing else is ---


def keys_left(db: TestDatabase) -> set[str]:
    return {str(r[0]) for r in db.sql("SELECT key FROM identity.outbox")}


async def stored_with_ages(engine: AsyncEngine, db: TestDatabase, now: datetime) -> None:
    """Old and recent events in every state: delivered, dead, still to deliver."""
    await store(engine, "t", [f"old-delivered-{i}" for i in range(5)] + ["recent-delivered", "old-dead", "old-pending"])
    for key, delivered_at, dead_at in (
        *((f"old-delivered-{i}", now - timedelta(days=8), None) for i in range(5)),
        ("recent-delivered", now - timedelta(days=6), None),
        ("old-dead", None, now - timedelta(days=30)),
    ):
        db.sql("UPDATE identity.outbox SET delivered_at = %s, dead_at = %s WHERE key = %s", (delivered_at, dead_at, key))
    db.sql("UPDATE identity.outbox SET created_at = %s", (now - timedelta(days=30),))


async def test_pruning_deletes_only_events_delivered_before_the_retention(engine: AsyncEngine, db: TestDatabase) -> None:
    now = datetime.now(UTC)
    await stored_with_ages(engine, db, now)
    relay = OutboxRelay(engine, OUTBOX, {"t": accept}, clock=lambda: now, retention=timedelta(days=7))
    # Batches of two, at most two a run: a big backlog goes over several runs.
    assert await relay.prune(batch=2, max_batches=2) == 4
    assert await relay.prune(batch=2, max_batches=2) == 1
    assert await relay.prune(batch=2, max_batches=2) == 0
    assert keys_left(db) == {"recent-delivered", "old-dead", "old-pending"}


async def test_a_running_relay_prunes_on_its_own(engine: AsyncEngine, db: TestDatabase) -> None:
    now = datetime.now(UTC)
    await stored_with_ages(engine, db, now)
    db.sql("UPDATE identity.outbox SET next_attempt_at = %s WHERE key = 'old-pending'", (now + timedelta(days=1),))
    relay = OutboxRelay(engine, OUTBOX, {"t": accept}, poll_s=3600, prune_every_s=0.05)
    relay.start()
    try:
        await eventually(lambda: keys_left(db) == {"recent-delivered", "old-dead", "old-pending"}, WAIT_S, "old events pruned")
    finally:
        await relay.stop()


def test_dead_letters_are_counted_through_their_own_index(db: TestDatabase) -> None:
    # The gauge's dead-letter count runs at every metrics refresh, on an outbox holding a week of
    # delivered events: it must not read them. With sequential scans priced out, a plan without
    # the index would still scan the table.
    with psycopg.connect(db.admin_dsn(), autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        row = conn.execute(
            "EXPLAIN (FORMAT JSON) SELECT count(*) FROM identity.outbox WHERE dead_at IS NOT NULL"
        ).fetchone()
    assert row is not None
    plan = row[0]
    assert DEAD_LETTER_INDEX in json.dumps(plan), plan
