"""The transactional outbox: an event committed with its rows reaches a real peer exactly once
in effect, even when the peer is down at first; a rolled-back unit leaves no event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.identity.app import build_server
from services.identity.store.tables import outbox
from tests.support.database import TestDatabase
from tests.support.ports import free_port
from zenthor.clients import open_channel
from zenthor.config import ServiceName
from zenthor.db import UnitOfWork, create_engine
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb
from zenthor.gen.zenthor.identity.v1 import identity_pb2_grpc
from zenthor.outbox import OutboxRelay, add_event, backoff_s

TOPIC = "contact.ensure"


def rows(db: TestDatabase) -> list[tuple[Any, ...]]:
    return db.sql("SELECT topic, key, attempts, delivered_at IS NOT NULL FROM identity.outbox ORDER BY created_at")


async def test_event_reaches_a_peer_that_was_down_exactly_once(settings_for: Any, db: TestDatabase, clerk_issuer: Any) -> None:
    peer_port = free_port()
    channel = open_channel(f"127.0.0.1:{peer_port}", "s3cret", deadline_s=3.0)
    stub = identity_pb2_grpc.IdentityServiceStub(channel)

    async def ensure_contact(payload: Any) -> None:
        await stub.CreateContact(pb.CreateContactRequest(phone=payload["phone"], name="n", is_allowed=True))

    engine = create_engine(db.dsn_for(ServiceName.IDENTITY))
    clock = [datetime.now(UTC)]
    relay = OutboxRelay(engine, outbox, {TOPIC: ensure_contact}, clock=lambda: clock[0])
    try:
        async with UnitOfWork(engine) as uow:
            await add_event(uow.conn, outbox, TOPIC, "5511999990000", {"phone": "5511999990000"}, clock[0])
            # A retried use case adds the same event again: stored once.
            await add_event(uow.conn, outbox, TOPIC, "5511999990000", {"phone": "5511999990000"}, clock[0])
            await uow.commit()
        assert await relay.drain_once() == 1  # peer down: attempt fails, rescheduled
        assert rows(db) == [(TOPIC, "5511999990000", 1, False)]
        assert await relay.drain_once() == 0  # not due yet (backoff)

        server = await build_server(settings_for(ServiceName.IDENTITY))
        await server.start(peer_port)
        try:
            clock[0] += timedelta(minutes=10)
            assert await relay.drain_once() == 1
            assert await relay.drain_once() == 0
        finally:
            await server.stop(0)
        assert rows(db) == [(TOPIC, "5511999990000", 2, True)]
        assert db.sql("SELECT phone FROM identity.contacts") == [("5511999990000",)]
    finally:
        await channel.close()
        await engine.dispose()


async def test_rolled_back_unit_of_work_leaves_no_event(db: TestDatabase) -> None:
    engine = create_engine(db.dsn_for(ServiceName.IDENTITY))
    try:
        with pytest.raises(RuntimeError):
            async with UnitOfWork(engine) as uow:
                await add_event(uow.conn, outbox, TOPIC, "k", {"phone": "1"}, datetime.now(UTC))
                raise RuntimeError("half-way failure")
        assert rows(db) == []
    finally:
        await engine.dispose()


async def test_a_permanent_rejection_is_parked_not_retried(db: TestDatabase) -> None:
    from zenthor.outbox import PermanentDeliveryError

    async def reject(payload: Any) -> None:
        raise PermanentDeliveryError("peer said INVALID_ARGUMENT")

    engine = create_engine(db.dsn_for(ServiceName.IDENTITY))
    now = datetime.now(UTC)
    relay = OutboxRelay(engine, outbox, {TOPIC: reject}, clock=lambda: now + timedelta(days=1))
    try:
        async with UnitOfWork(engine) as uow:
            await add_event(uow.conn, outbox, TOPIC, "k", {}, now)
            await uow.commit()
        assert await relay.drain_once() == 1
        assert await relay.drain_once() == 0
        assert db.sql("SELECT dead_at IS NOT NULL, last_error FROM identity.outbox") == [(True, "peer said INVALID_ARGUMENT")]
    finally:
        await engine.dispose()


def test_backoff_grows_and_is_capped() -> None:
    import random

    rng = random.Random(7)
    assert 0.25 <= backoff_s(1, rng) <= 0.5
    assert 4 <= backoff_s(5, rng) <= 8
    assert 150 <= backoff_s(40, rng) <= 300


async def test_an_event_the_peer_calls_invalid_is_parked(settings_for: Any, db: TestDatabase) -> None:
    server = await build_server(settings_for(ServiceName.IDENTITY))
    port = await server.start(0)
    channel = open_channel(f"127.0.0.1:{port}", "s3cret")
    stub = identity_pb2_grpc.IdentityServiceStub(channel)

    async def ensure_contact(payload: Any) -> None:
        await stub.CreateContact(pb.CreateContactRequest(phone=payload["phone"], name="n", is_allowed=True))

    engine = create_engine(db.dsn_for(ServiceName.IDENTITY))
    relay = OutboxRelay(engine, outbox, {TOPIC: ensure_contact})
    try:
        async with UnitOfWork(engine) as uow:
            await add_event(uow.conn, outbox, TOPIC, "bad", {"phone": "not-a-phone"}, datetime.now(UTC))
            await uow.commit()
        assert await relay.drain_once() == 1
        [(dead, error)] = db.sql("SELECT dead_at IS NOT NULL, last_error FROM identity.outbox")
        assert dead and "phone" in error
    finally:
        await channel.close()
        await server.stop(0)
        await engine.dispose()


async def test_an_ordered_topic_delivers_each_partition_in_write_order(db: TestDatabase) -> None:
    """Two messages of one conversation sent 10 ms apart must queue their jobs in that order: an
    event of an ordered topic waits while an earlier one of its partition is undelivered (here:
    its peer failed it once), while other partitions go on."""
    engine = create_engine(db.dsn_for(ServiceName.IDENTITY))
    clock = [datetime.now(UTC)]
    delivered: list[str] = []
    failed_once: set[str] = set()

    async def handler(payload: Any) -> None:
        if payload["n"] == "a1" and "a1" not in failed_once:
            failed_once.add("a1")
            raise RuntimeError("peer busy")
        delivered.append(payload["n"])

    relay = OutboxRelay(engine, outbox, {TOPIC: handler}, clock=lambda: clock[0], ordered_by={TOPIC: "conversation"})
    unordered = OutboxRelay(engine, outbox, {TOPIC: handler}, clock=lambda: clock[0])
    try:
        async with UnitOfWork(engine) as uow:
            for n, conversation in (("a1", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A"), ("b2", "B")):
                await add_event(uow.conn, outbox, TOPIC, n, {"n": n, "conversation": conversation}, clock[0])
            await uow.commit()
        # Round by round: the head of each partition only; A's head fails and holds A back.
        assert await relay.drain_once() == 2
        assert delivered == ["b1"]
        assert await relay.drain_once() == 1
        assert delivered == ["b1", "b2"]
        assert await relay.drain_once() == 0  # a1 waits for its backoff; a2, a3 wait for a1
        clock[0] += timedelta(minutes=10)
        while await relay.drain_once():
            pass
        assert delivered == ["b1", "b2", "a1", "a2", "a3"]
        # Without the ordering, the same rows would all be leased at once (the control).
        async with UnitOfWork(engine) as uow:
            for n in ("x1", "x2", "x3"):
                await add_event(uow.conn, outbox, TOPIC, n, {"n": n, "conversation": "X"}, clock[0])
            await uow.commit()
        assert await unordered.drain_once() == 3
    finally:
        await engine.dispose()
