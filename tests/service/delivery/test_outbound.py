"""The outbound queue over gRPC: enqueue, claim, complete, fail, release, expired leases and the
per-recipient order, with docs/hardening.md #10, #14, #15, #16 and #27 fixed. Every sender holds
its account's WhatsApp lease first (docs/hardening.md #41, tested in test_outbound_lease.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import duration_pb2

from tests.service.conftest import Running
from tests.service.delivery.conftest import DeliveryFactory
from tests.support.delivery_builders import (
    WEB,
    WHATSAPP,
    claim,
    count_rows,
    delivery_marks,
    enqueue,
    hold_lease,
    outbox_events,
    row,
    set_attempts,
)
from tests.support.fake_clock import T0, FakeClock
from tests.support.grpc_client import rpc_error, service
from tests.support.streams import next_message, read_until
from zenthor import ids
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb

PHONE_A, PHONE_B, PHONE_C = "5511999990001", "5511999990002", "5511999990003"


def at(ts: object) -> object:
    return ts.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined]


async def complete(delivery: Running, outbound_id: str, processor_id: str) -> pb.CompleteOutboundResponse:
    return await delivery.stub.CompleteOutbound(
        pb.CompleteOutboundRequest(id=outbound_id, processor_id=processor_id), metadata=service()
    )


async def fail(
    delivery: Running, outbound_id: str, processor_id: str, error: str = "socket closed", retry: bool | None = None
) -> pb.FailOutboundResponse:
    return await delivery.stub.FailOutbound(
        pb.FailOutboundRequest(id=outbound_id, processor_id=processor_id, error=error, retry=retry), metadata=service()
    )


async def release(delivery: Running, outbound_id: str, attempt_count: int) -> bool:
    reply = await delivery.stub.ReleaseOutbound(
        pb.ReleaseOutboundRequest(id=outbound_id, attempt_count=attempt_count), metadata=service()
    )
    return reply.released


# --- enqueue ---


async def test_enqueue_is_idempotent_on_message_and_channel(delivery: Running) -> None:
    message_id = ids.MESSAGE.new()
    first = await enqueue(delivery, message_id=message_id, content="first")
    again = await delivery.stub.EnqueueOutbound(
        pb.EnqueueOutboundRequest(
            channel=WHATSAPP,
            conversation_id=first.conversation_id,
            message_id=first.message_id,
            to=PHONE_A,
            content="second",
        ),
        metadata=service(),
    )
    assert not again.created and again.outbound.id == first.id and again.outbound.payload.content == "first"
    assert count_rows(delivery, "outbound_messages") == 1
    assert first.status == pb.OUTBOUND_STATUS_PENDING and first.attempt_count == 0
    assert first.payload.metadata.kind == "assistant_message"


async def test_enqueue_without_an_account_gets_the_deployment_account(delivery_factory: object) -> None:
    # docs/hardening.md #10: the row carries WHATSAPP_ACCOUNT_ID, so the egress claims it.
    delivery = await delivery_factory(whatsapp_account_id="wa-main")  # type: ignore[operator]
    queued = await enqueue(delivery, account_id=None, kind="phone_verification")
    assert queued.account_id == "wa-main"
    await hold_lease(delivery, "wa1", account_id="wa-main")
    assert [m.id for m in await claim(delivery, "wa1", account_id="wa-main")] == [queued.id]


# --- claim ---


async def test_claim_takes_the_oldest_matching_rows_with_the_default_lease(delivery: Running, clock: FakeClock) -> None:
    # The oldest claimable row of the account and channel, leased for the default 30 s; other
    # accounts' rows are not taken (every row has an account now, docs/hardening.md #10).
    o1 = await enqueue(delivery, to=PHONE_A)
    clock.set(T0 - timedelta(seconds=5))
    o2 = await enqueue(delivery, to=PHONE_B)
    clock.set(T0 - timedelta(seconds=10))
    await enqueue(delivery, channel=WEB, to=None)
    clock.set(T0 - timedelta(seconds=20))
    await enqueue(delivery, account_id="acc2", to=PHONE_C)
    clock.set(T0 + timedelta(seconds=1))
    await hold_lease(delivery, "wa1")
    (first,) = await claim(delivery, "wa1")
    assert first.id == o2.id
    assert first.status == pb.OUTBOUND_STATUS_PROCESSING and first.processor_id == "wa1"
    assert at(first.lease_expire_time) == T0 + timedelta(seconds=31)
    assert [m.id for m in await claim(delivery, "wa1")] == [o1.id]
    assert await claim(delivery, "wa1") == []


async def test_claim_lease_is_raised_to_one_second(delivery: Running) -> None:
    # A claim lease under 1 s is raised to 1 s.
    await enqueue(delivery)
    await hold_lease(delivery, "wa1")
    (claimed,) = await claim(delivery, "wa1", lease=duration_pb2.Duration(nanos=10_000_000))
    assert at(claimed.lease_expire_time) == T0 + timedelta(seconds=1)


@pytest.mark.parametrize(
    ("lease", "max_messages"),
    [(duration_pb2.Duration(seconds=601), 1), (duration_pb2.Duration(seconds=-1), 1), (None, -1)],
)
async def test_claim_out_of_bounds_is_invalid_and_leases_nothing(
    delivery: Running, lease: duration_pb2.Duration | None, max_messages: int
) -> None:
    queued = await enqueue(delivery)
    error = await rpc_error(claim(delivery, "wa1", max_messages=max_messages, lease=lease))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["lease" if lease is not None else "max_messages"]
    assert row(delivery, queued.id)["status"] == "pending"


async def test_batch_claim_is_oldest_first_and_capped_at_one_hundred(delivery: Running, clock: FakeClock) -> None:
    queued = []
    for i in range(105):
        clock.set(T0 + timedelta(milliseconds=i))
        queued.append(await enqueue(delivery, to=f"55119{i:08d}"))
    await hold_lease(delivery, "wa1")
    first = await claim(delivery, "wa1", max_messages=1000)
    assert [m.id for m in first] == [q.id for q in queued[:100]]
    assert [m.id for m in await claim(delivery, "wa1", max_messages=0)] == [queued[100].id]


async def test_concurrent_claimers_never_receive_the_same_row(delivery: Running) -> None:
    # Twelve send loops of the lease holder claim at once (standbys beside them get nothing).
    queued = {(await enqueue(delivery, to=f"55119{i:08d}")).id for i in range(60)}
    await hold_lease(delivery, "wa1")
    batches = await asyncio.gather(
        *(claim(delivery, "wa1", max_messages=7) for _ in range(12)),
        *(claim(delivery, f"standby{i}", max_messages=7) for i in range(4)),
    )
    claimed = [m.id for batch in batches[:12] for m in batch]
    assert len(claimed) == len(set(claimed)) == 60
    assert set(claimed) == queued
    assert [m for batch in batches[12:] for m in batch] == []


# --- per-recipient order, no head-of-line blocking ---


async def test_a_recipients_messages_go_out_one_at_a_time_in_order(delivery: Running) -> None:
    a1 = await enqueue(delivery, to=PHONE_A, content="1")
    a2 = await enqueue(delivery, to=PHONE_A, content="2")
    b1 = await enqueue(delivery, to=PHONE_B)
    await hold_lease(delivery, "wa1")
    assert [m.id for m in await claim(delivery, "wa1", max_messages=10)] == [a1.id, b1.id]
    assert await claim(delivery, "wa1", max_messages=10) == []  # a2 waits for a1
    await complete(delivery, a1.id, "wa1")
    assert [m.id for m in await claim(delivery, "wa1", max_messages=10)] == [a2.id]


async def test_a_failing_message_holds_back_only_its_own_recipient(delivery: Running) -> None:
    # No head-of-line blocking: a1 waits for its retry; b1 (another recipient) goes out, a2 waits.
    a1 = await enqueue(delivery, to=PHONE_A)
    a2 = await enqueue(delivery, to=PHONE_A)
    b1 = await enqueue(delivery, to=PHONE_B)
    await hold_lease(delivery, "wa1")
    (claimed,) = await claim(delivery, "wa1")
    assert claimed.id == a1.id
    failed = (await fail(delivery, a1.id, "wa1")).outbound
    assert failed.status == pb.OUTBOUND_STATUS_WAITING_RETRY
    assert [m.id for m in await claim(delivery, "wa1", max_messages=10)] == [b1.id]
    assert await release(delivery, a1.id, 1)
    assert [m.id for m in await claim(delivery, "wa1", max_messages=10)] == [a1.id]  # still before a2
    await complete(delivery, a1.id, "wa1")
    assert [m.id for m in await claim(delivery, "wa1", max_messages=10)] == [a2.id]


# --- expired leases (docs/hardening.md #16) ---


async def test_expired_lease_is_reclaimed_counting_an_attempt(delivery: Running, clock: FakeClock) -> None:
    # At T0 + lease (inclusive) the next claim reclaims O1 with attemptCount 1;
    # it waits for its backoff (RetryWorkflow), and the stale holder can no longer complete it.
    o1 = await enqueue(delivery)
    await hold_lease(delivery, "wa1")
    await claim(delivery, "wa1", lease=duration_pb2.Duration(seconds=30))
    clock.advance(seconds=30)
    await hold_lease(delivery, "wa2")  # wa1 stopped; wa2 took over the account
    assert await claim(delivery, "wa2") == []
    stored = row(delivery, o1.id)
    assert (stored["status"], stored["attempt_count"], stored["processor_id"]) == ("waiting_retry", 1, None)
    assert "wa1" in stored["last_error"] and stored["next_attempt_at"] > clock()
    ((key, payload),) = outbox_events(delivery, "temporal.retry")
    assert key == f"retry-{o1.id}-1"
    assert payload["target"] == "delivery.ReleaseOutbound"
    assert payload["request"] == {"id": o1.id, "attempt_count": 1}
    error = await rpc_error(complete(delivery, o1.id, "wa1"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await release(delivery, o1.id, 1)
    (again,) = await claim(delivery, "wa2")
    assert again.id == o1.id and again.attempt_count == 1


async def test_a_message_whose_sender_keeps_crashing_fails_at_the_cap(delivery: Running, clock: FakeClock) -> None:
    o1 = await enqueue(delivery)
    set_attempts(delivery, o1.id, 4)
    await hold_lease(delivery, "wa1")
    await claim(delivery, "wa1")
    clock.advance(minutes=1)
    await hold_lease(delivery, "wa2")
    await claim(delivery, "wa2")
    stored = row(delivery, o1.id)
    assert (stored["status"], stored["attempt_count"]) == ("failed", 5)
    assert outbox_events(delivery, "temporal.retry") == []
    ((key, payload),) = delivery_marks(delivery)
    assert key == o1.id and payload == {"message_id": o1.message_id, "outcome": "failed"}


async def test_stale_sweep_handles_every_account_in_batches(delivery: Running, clock: FakeClock) -> None:
    for account in ("a1", "a2", "a3"):
        await enqueue(delivery, account_id=account)
        await hold_lease(delivery, "wa1", account_id=account)
        await claim(delivery, "wa1", account_id=account)
    clock.advance(minutes=1)
    first = await delivery.stub.RequeueStaleOutbound(pb.RequeueStaleOutboundRequest(batch_size=2), metadata=service())
    second = await delivery.stub.RequeueStaleOutbound(pb.RequeueStaleOutboundRequest(batch_size=2), metadata=service())
    assert (first.requeued, first.failed, first.more) == (2, 0, True)
    assert (second.requeued, second.failed, second.more) == (1, 0, False)
    assert delivery.db.sql("SELECT DISTINCT status FROM delivery.outbound_messages") == [("waiting_retry",)]


# --- fail: backoff, cap (docs/hardening.md #14, #15) ---


async def test_default_failure_waits_for_its_backoff_and_the_fifth_failure_is_final(
    delivery: Running, clock: FakeClock
) -> None:
    # Attempt 4 → WAITING_RETRY (not claimable until released), 5 → FAILED.
    o1 = await enqueue(delivery)
    set_attempts(delivery, o1.id, 3)
    await hold_lease(delivery, "wa1")
    await claim(delivery, "wa1")
    waiting = (await fail(delivery, o1.id, "wa1", "socket closed")).outbound
    assert waiting.status == pb.OUTBOUND_STATUS_WAITING_RETRY and waiting.attempt_count == 4
    assert waiting.last_error == "socket closed"
    assert not waiting.HasField("processor_id") and not waiting.HasField("lease_expire_time")
    assert at(waiting.next_attempt_time) > clock()
    assert await claim(delivery, "wa1") == []  # no immediate re-claim (docs/hardening.md #14)
    assert await release(delivery, o1.id, 4)
    await claim(delivery, "wa1")
    final = (await fail(delivery, o1.id, "wa1", "socket closed")).outbound
    assert final.status == pb.OUTBOUND_STATUS_FAILED and final.attempt_count == 5
    assert [k for k, _ in outbox_events(delivery, "temporal.retry")] == [f"retry-{o1.id}-4"]
    assert delivery_marks(delivery) == [
        (o1.id, {"message_id": o1.message_id, "outcome": "failed"})
    ]


async def test_retry_true_cannot_bypass_the_attempt_cap(delivery: Running) -> None:
    # docs/hardening.md #15: the original retried forever with `retry: true`.
    o1 = await enqueue(delivery)
    set_attempts(delivery, o1.id, 4)
    await hold_lease(delivery, "wa1")
    await claim(delivery, "wa1")
    final = (await fail(delivery, o1.id, "wa1", "x", retry=True)).outbound
    assert final.status == pb.OUTBOUND_STATUS_FAILED and final.attempt_count == 5


async def test_retry_false_fails_at_once_and_errors_are_truncated(delivery: Running) -> None:
    # Retry false at attempt 0 → FAILED; a 700-character error keeps 500.
    o1 = await enqueue(delivery)
    await hold_lease(delivery, "wa1")
    await claim(delivery, "wa1")
    final = (await fail(delivery, o1.id, "wa1", "e" * 700, retry=False)).outbound
    assert final.status == pb.OUTBOUND_STATUS_FAILED and final.attempt_count == 1
    assert final.last_error == "e" * 500


async def test_unknown_ids_answer_absent(delivery: Running) -> None:
    unknown = ids.OUTBOUND.format(ids.OUTBOUND.new())
    assert not (await fail(delivery, unknown, "wa1")).HasField("outbound")
    assert not (await complete(delivery, unknown, "wa1")).HasField("outbound")
    assert not await release(delivery, unknown, 1)


# --- only the lease holder, only from PROCESSING (docs/hardening.md #15) ---


async def test_only_the_lease_holder_can_complete_or_fail_a_processing_message(delivery: Running) -> None:
    o1 = await enqueue(delivery)
    error = await rpc_error(complete(delivery, o1.id, "wa1"))  # still pending
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "pending" in (error.details() or "")
    await hold_lease(delivery, "wa1")
    await claim(delivery, "wa1")
    for call in (complete(delivery, o1.id, "wa2"), fail(delivery, o1.id, "wa2")):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "wa1" in (error.details() or "")
    assert row(delivery, o1.id)["status"] == "processing"
    sent = (await complete(delivery, o1.id, "wa1")).outbound
    assert sent.status == pb.OUTBOUND_STATUS_SENT
    # A sent row can no longer be re-queued or re-completed.
    for call in (fail(delivery, o1.id, "wa1", retry=True), complete(delivery, o1.id, "wa1")):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "sent" in (error.details() or "")
    assert row(delivery, o1.id)["status"] == "sent"


async def test_complete_clears_the_lease_and_marks_the_message_delivered(delivery: Running) -> None:
    # docs/hardening.md #27: the linked message is marked through the outbox.
    o1 = await enqueue(delivery)
    await hold_lease(delivery, "wa1")
    await claim(delivery, "wa1")
    await fail(delivery, o1.id, "wa1", "x")
    await release(delivery, o1.id, 1)
    await claim(delivery, "wa1")
    sent = (await complete(delivery, o1.id, "wa1")).outbound
    assert sent.status == pb.OUTBOUND_STATUS_SENT
    assert not sent.HasField("last_error") and not sent.HasField("processor_id")
    assert not sent.HasField("lease_expire_time")
    assert delivery_marks(delivery) == [
        (o1.id, {"message_id": o1.message_id, "outcome": "delivered"})
    ]


async def test_release_is_fenced_by_the_attempt_it_was_scheduled_for(delivery: Running) -> None:
    o1 = await enqueue(delivery)
    await hold_lease(delivery, "wa1")
    await claim(delivery, "wa1")
    await fail(delivery, o1.id, "wa1")
    assert not await release(delivery, o1.id, 2)  # not the attempt it waits for
    assert await release(delivery, o1.id, 1)
    assert not await release(delivery, o1.id, 1)  # duplicate: already pending
    assert row(delivery, o1.id)["status"] == "pending"


# --- listing and watching ---


async def test_pending_outbound_of_a_conversation_lists_unfinished_rows_oldest_first(delivery: Running) -> None:
    conversation = ids.CONVERSATION.new()
    done = await enqueue(delivery, conversation_id=conversation, to=PHONE_A)
    waiting = await enqueue(delivery, conversation_id=conversation, to=PHONE_B)
    pending = await enqueue(delivery, conversation_id=conversation, to=PHONE_C)
    await enqueue(delivery)  # another conversation
    await hold_lease(delivery, "wa1")
    await claim(delivery, "wa1", max_messages=2)
    await complete(delivery, done.id, "wa1")
    await fail(delivery, waiting.id, "wa1")
    reply = await delivery.stub.ListPendingOutbound(
        pb.ListPendingOutboundRequest(conversation_id=ids.CONVERSATION.format(conversation)), metadata=service()
    )
    assert [m.id for m in reply.outbound_messages] == [waiting.id, pending.id]


def observed_since(moment: datetime) -> Callable[[pb.WatchOutboundResponse], bool]:
    return lambda update: update.observe_time.ToDatetime(tzinfo=UTC) >= moment


async def test_watch_outbound_wakes_the_egress_on_every_change(delivery_factory: DeliveryFactory, clock: FakeClock) -> None:
    # No periodic re-read during the test: every answer below comes from a wake-up (and a re-read
    # between the claim and the complete would rightly report 0 first). Each change happens at a
    # later (fake) time, so the answer it caused is the first one observed since then.
    delivery = await delivery_factory(build={"watch_resync_s": 60.0})
    await hold_lease(delivery, "wa1")
    stream = delivery.stub.WatchOutbound(pb.WatchOutboundRequest(account_id="default", channel=WHATSAPP), metadata=service())
    assert (await next_message(stream)).claimable_count == 0
    a1 = await enqueue(delivery, to=PHONE_A)
    await read_until(stream, lambda update: update.claimable_count == 1)
    moment = clock.advance(seconds=1)
    await enqueue(delivery, to=PHONE_A)  # behind a1: not claimable yet, but the egress is told
    assert (await read_until(stream, observed_since(moment))).claimable_count == 1
    await claim(delivery, "wa1")  # taking rows wakes nobody
    moment = clock.advance(seconds=1)
    await complete(delivery, a1.id, "wa1")  # a1 left: a2 is claimable now
    assert (await read_until(stream, observed_since(moment))).claimable_count == 1
    stream.cancel()


async def test_watch_outbound_counts_expired_leases_as_claimable(delivery: Running, clock: FakeClock) -> None:
    await enqueue(delivery)
    await hold_lease(delivery, "wa1")
    await claim(delivery, "wa1")
    stream = delivery.stub.WatchOutbound(pb.WatchOutboundRequest(account_id="default", channel=WHATSAPP), metadata=service())
    assert (await next_message(stream)).claimable_count == 0
    clock.advance(seconds=30)
    # Noticed without a write (a claim reclaims it).
    await read_until(stream, lambda update: update.claimable_count == 1)
    stream.cancel()


# --- bad input ---


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"conversation_id": "conv_xyz"}, "conversation_id"),
        ({"message_id": ids.CONVERSATION.format(uuid.uuid4())}, "message_id"),
        ({"to": None}, "to"),
        ({"to": "+55 11 99999-0000"}, "to"),
        ({"channel": 0}, "channel"),
        ({"content": ""}, "content"),
        ({"account_id": ""}, "account_id"),
        ({"account_id": "a" * 129}, "account_id"),
    ],
)
async def test_bad_enqueue_requests_name_the_field_and_write_nothing(
    delivery: Running, change: dict[str, object], field: str
) -> None:
    values: dict[str, object] = {
        "channel": WHATSAPP,
        "account_id": "default",
        "conversation_id": ids.CONVERSATION.format(ids.CONVERSATION.new()),
        "message_id": ids.MESSAGE.format(ids.MESSAGE.new()),
        "to": PHONE_A,
        "content": "hi",
    }
    values.update(change)
    request = pb.EnqueueOutboundRequest(**{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]
    error = await rpc_error(delivery.stub.EnqueueOutbound(request, metadata=service()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == [field]
    assert count_rows(delivery, "outbound_messages") == 0


async def test_malformed_ids_and_empty_holders_are_invalid(delivery: Running) -> None:
    o1 = await enqueue(delivery)
    await hold_lease(delivery, "wa1")
    await claim(delivery, "wa1")
    cases = [
        (complete(delivery, "out_123", "wa1"), "id"),
        (complete(delivery, o1.id, ""), "processor_id"),
        (fail(delivery, ids.MESSAGE.format(uuid.uuid4()), "wa1"), "id"),
        (claim(delivery, "", max_messages=1), "processor_id"),
        (claim(delivery, "wa1", account_id=""), "account_id"),
        (claim(delivery, "wa1", channel=0), "channel"),
    ]
    for call, field in cases:
        error = await rpc_error(call)
        assert (error.code(), violated_fields(error)) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    assert row(delivery, o1.id)["status"] == "processing"
