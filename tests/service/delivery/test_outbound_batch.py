"""Batched acknowledgements of outbound rows: CompleteOutboundMessages, and acks carried on
ClaimOutbound. Each ack is the guarded CompleteOutbound (claim holder, still holding the
account's WhatsApp lease, from PROCESSING only: docs/hardening.md #15, #41); a refused one is
named in the answer and changes nothing. Each sent row marks its message through the outbox and
hands its recipient over to the next message, as a single CompleteOutbound does."""

from __future__ import annotations

import grpc

from tests.service.conftest import Running
from tests.support.delivery_builders import (
    WHATSAPP,
    claim,
    delivery_marks,
    enqueue,
    hold_lease,
    row,
)
from tests.support.fake_clock import FakeClock
from tests.support.grpc_client import rpc_error, service
from zenthor import ids
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb

PHONE_A, PHONE_B, PHONE_C = "5511999990001", "5511999990002", "5511999990003"


async def complete_many(delivery: Running, processor_id: str, outbound_ids: list[str]) -> pb.CompleteOutboundMessagesResponse:
    return await delivery.stub.CompleteOutboundMessages(
        pb.CompleteOutboundMessagesRequest(processor_id=processor_id, ids=outbound_ids), metadata=service()
    )


async def test_complete_many_marks_the_holders_rows_sent_and_names_the_refused_ones(delivery: Running) -> None:
    a = await enqueue(delivery, to=PHONE_A)
    b = await enqueue(delivery, to=PHONE_B)
    waiting = await enqueue(delivery, to=PHONE_C)
    await hold_lease(delivery, "wa1")
    claimed = await claim(delivery, "wa1", max_messages=2)
    assert [m.id for m in claimed] == [a.id, b.id]
    unknown = ids.OUTBOUND.format(ids.OUTBOUND.new())

    reply = await complete_many(delivery, "wa1", [a.id, b.id, waiting.id, unknown])

    assert list(reply.refused_ids) == [waiting.id, unknown]
    assert [row(delivery, m)["status"] for m in (a.id, b.id, waiting.id)] == ["sent", "sent", "pending"]
    marked = {key: payload for key, payload in delivery_marks(delivery)}
    assert {k: p["outcome"] for k, p in marked.items()} == {a.id: "delivered", b.id: "delivered"}


async def test_acks_from_a_sender_that_lost_the_lease_are_refused(delivery: Running, clock: FakeClock) -> None:
    sent = await enqueue(delivery, to=PHONE_A)
    await hold_lease(delivery, "wa1", ttl_s=60)
    await claim(delivery, "wa1")
    clock.advance(seconds=61)  # wa1's account lease lapsed
    await hold_lease(delivery, "wa2")

    reply = await complete_many(delivery, "wa1", [sent.id])

    assert list(reply.refused_ids) == [sent.id]
    assert row(delivery, sent.id)["status"] == "processing"
    assert delivery_marks(delivery) == []


async def test_acks_carried_on_a_claim_free_the_recipients_next_message_for_that_same_claim(delivery: Running) -> None:
    first = await enqueue(delivery, to=PHONE_A)
    second = await enqueue(delivery, to=PHONE_A)
    await hold_lease(delivery, "wa1")
    assert [m.id for m in await claim(delivery, "wa1", max_messages=10)] == [first.id]

    reply = await delivery.stub.ClaimOutbound(
        pb.ClaimOutboundRequest(
            account_id="default", processor_id="wa1", channel=WHATSAPP,
            max_messages=10, completed_ids=[first.id],
        ),
        metadata=service(),
    )

    assert list(reply.refused_ids) == []
    assert [m.id for m in reply.outbound_messages] == [second.id]
    assert (row(delivery, first.id)["status"], row(delivery, second.id)["status"]) == ("sent", "processing")


async def test_bad_acks_are_refused_naming_the_field(delivery: Running) -> None:
    empty = await rpc_error(complete_many(delivery, "wa1", []))
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(empty) == ["ids"]
    malformed = await rpc_error(complete_many(delivery, "wa1", ["msg_nope"]))
    assert malformed.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(malformed) == ["ids[0]"]
    too_many = await rpc_error(
        claim(delivery, "wa1", completed_ids=[ids.OUTBOUND.format(ids.OUTBOUND.new()) for _ in range(101)])
    )
    assert too_many.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(too_many) == ["completed_ids"]
