"""Outbound sends are lease-gated (docs/hardening.md #41): only the current, unexpired holder of
the account's WhatsApp lease claims, completes and fails its messages. A standby gets nothing
and changes nothing; after a takeover the old holder can settle nothing it claimed, and the new
holder gets those rows once their claim lock runs out."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
from google.protobuf import duration_pb2

from tests.service.conftest import Running
from tests.support.delivery_builders import claim, enqueue, hold_lease, outbox_events, row
from tests.support.fake_clock import T0, FakeClock
from tests.support.grpc_client import rpc_error, service
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb

PHONE_A, PHONE_B = "5511999990001", "5511999990002"
THIRTY_S = duration_pb2.Duration(seconds=30)


def snapshot(delivery: Running) -> list[tuple[object, ...]]:
    return delivery.db.sql(
        "SELECT id, status, processor_id, locked_until, attempt_count, is_head FROM delivery.outbound_messages ORDER BY id"
    )


async def complete(delivery: Running, outbound_id: str, processor_id: str) -> pb.CompleteOutboundResponse:
    return await delivery.stub.CompleteOutbound(
        pb.CompleteOutboundRequest(id=outbound_id, processor_id=processor_id), metadata=service()
    )


async def fail(delivery: Running, outbound_id: str, processor_id: str) -> pb.FailOutboundResponse:
    return await delivery.stub.FailOutbound(
        pb.FailOutboundRequest(id=outbound_id, processor_id=processor_id, error="socket closed", retry=True),
        metadata=service(),
    )


async def release(delivery: Running, outbound_id: str, attempt_count: int) -> bool:
    reply = await delivery.stub.ReleaseOutbound(
        pb.ReleaseOutboundRequest(id=outbound_id, attempt_count=attempt_count), metadata=service()
    )
    return reply.released


async def acquire(delivery: Running, owner_id: str, ttl_s: int) -> pb.AcquireLeaseResponse:
    return await delivery.stub.AcquireLease(
        pb.AcquireLeaseRequest(account_id="default", owner_id=owner_id, ttl=duration_pb2.Duration(seconds=ttl_s)),
        metadata=service(),
    )


async def test_a_standby_that_does_not_hold_the_lease_claims_nothing_and_changes_nothing(
    delivery: Running, clock: FakeClock
) -> None:
    stuck = await enqueue(delivery, to=PHONE_A)
    waiting = await enqueue(delivery, to=PHONE_B)
    # No lease at all on the account yet: nobody claims.
    assert await claim(delivery, "wa1", max_messages=10) == []
    await hold_lease(delivery, "wa1")
    (claimed,) = await claim(delivery, "wa1", lease=THIRTY_S)
    assert claimed.id == stuck.id
    clock.advance(seconds=30)  # wa1's claim lock ran out (its account lease did not)
    before = snapshot(delivery)
    # The standby gets nothing, and does not even reclaim the expired claim (it writes nothing).
    assert await claim(delivery, "wa2", max_messages=10) == []
    assert snapshot(delivery) == before
    assert outbox_events(delivery, "temporal.retry") == []
    # The holder's next claim does both: reclaims the expired claim, takes the other recipient.
    assert [m.id for m in await claim(delivery, "wa1", max_messages=10)] == [waiting.id]
    assert (row(delivery, stuck.id)["status"], row(delivery, stuck.id)["attempt_count"]) == ("waiting_retry", 1)
    # A lease that lapsed (no heartbeat) gates its own owner too: nothing until re-acquired.
    await release(delivery, stuck.id, 1)
    clock.advance(seconds=600)
    assert await claim(delivery, "wa1", max_messages=10) == []
    assert row(delivery, stuck.id)["status"] == "pending"


async def test_after_a_lease_takeover_the_old_holder_cannot_settle_and_the_new_holder_gets_the_rows(
    delivery: Running, clock: FakeClock
) -> None:
    a1 = await enqueue(delivery, to=PHONE_A)
    b1 = await enqueue(delivery, to=PHONE_B)
    await hold_lease(delivery, "wa1", ttl_s=10)
    assert [m.id for m in await claim(delivery, "wa1", max_messages=10, lease=THIRTY_S)] == [a1.id, b1.id]
    # wa1 stops heartbeating; its lease lapses and the standby takes the account over.
    clock.set(T0 + timedelta(seconds=10))
    assert (await acquire(delivery, "wa2", ttl_s=600)).acquired
    held = snapshot(delivery)
    # The old holder's claims are still its own, but it can settle none of them.
    for call in (complete(delivery, a1.id, "wa1"), fail(delivery, b1.id, "wa1")):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no longer holds the WhatsApp lease" in (error.details() or "")
    assert snapshot(delivery) == held
    assert await claim(delivery, "wa1", max_messages=10) == []
    # The new holder waits for wa1's claim lock (T0 + 30 s), then reclaims both rows counting an
    # attempt; once their retry releases them (RetryWorkflow's call), they are its to send.
    assert await claim(delivery, "wa2", max_messages=10) == []
    assert snapshot(delivery) == held
    clock.set(T0 + timedelta(seconds=30))
    assert await claim(delivery, "wa2", max_messages=10) == []
    assert [row(delivery, o.id)["status"] for o in (a1, b1)] == ["waiting_retry", "waiting_retry"]
    assert await release(delivery, a1.id, 1) and await release(delivery, b1.id, 1)
    again = await claim(delivery, "wa2", max_messages=10)
    assert [(m.id, m.processor_id, m.attempt_count) for m in again] == [(a1.id, "wa2", 1), (b1.id, "wa2", 1)]
    assert (await complete(delivery, a1.id, "wa2")).outbound.status == pb.OUTBOUND_STATUS_SENT
    # wa1 is a standby now: nothing of what it claimed before is its to settle.
    error = await rpc_error(fail(delivery, b1.id, "wa1"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert row(delivery, b1.id)["processor_id"] == "wa2"


async def test_claims_racing_a_takeover_are_all_one_holders(delivery: Running, clock: FakeClock) -> None:
    # Many claims of the old and the new holder, and the takeover itself, all at once: the lease
    # row decides, so every claimed row has the same holder and no row is claimed twice.
    queued = {(await enqueue(delivery, to=f"55119{i:08d}")).id for i in range(40)}
    await hold_lease(delivery, "wa1", ttl_s=10)
    clock.set(T0 + timedelta(seconds=10))  # wa1's lease just lapsed
    results = await asyncio.gather(
        *(claim(delivery, "wa1", max_messages=3) for _ in range(8)),
        acquire(delivery, "wa2", ttl_s=600),
        *(claim(delivery, "wa2", max_messages=3) for _ in range(8)),
    )
    assert results[8].acquired  # type: ignore[union-attr]
    claims = [m for batch in (*results[:8], *results[9:]) for m in batch]  # type: ignore[union-attr]
    assert {m.processor_id for m in claims} <= {"wa2"}
    assert len({m.id for m in claims}) == len(claims)
    stored = delivery.db.sql("SELECT DISTINCT processor_id FROM delivery.outbound_messages WHERE status = 'processing'")
    assert stored in ([], [("wa2",)])
    # Whatever the race left pending, the new holder claims now; wa1 never gets any.
    rest = await claim(delivery, "wa2", max_messages=100)
    assert {m.id for m in claims} | {m.id for m in rest} == queued
    assert await claim(delivery, "wa1", max_messages=100) == []
