"""WorkOutbound: a sender's ClaimOutbound calls as one long-lived stream. Each message is answered
as the ClaimOutbound call would be (acks first, guarded as CompleteOutbound, then the claim of the
recipients' heads for the lease holder only), in order; the stream is authenticated once with
the service key; a bad message ends the stream with INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import pytest

from tests.service.conftest import Running
from tests.support.delivery_builders import WHATSAPP, enqueue, hold_lease, row
from tests.support.grpc_client import service
from tests.support.streams import exchange, refusal
from zenthor import ids
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb


def work(processor: str, *, sent: Sequence[str] = (), max_messages: int = 10) -> pb.WorkOutboundRequest:
    claim = pb.ClaimOutboundRequest(
        account_id="default", processor_id=processor, channel=WHATSAPP, max_messages=max_messages, completed_ids=sent
    )
    return pb.WorkOutboundRequest(claim=claim)


async def test_each_message_acknowledges_then_claims_and_is_answered_in_order(delivery: Running) -> None:
    await hold_lease(delivery, "egress-1")
    a1 = await enqueue(delivery, to="5511900000001", content="a1")
    a2 = await enqueue(delivery, to="5511900000001", content="a2")
    b1 = await enqueue(delivery, to="5511900000002", content="b1")
    stream = delivery.stub.WorkOutbound(metadata=service())
    try:
        first = await exchange(stream, work("egress-1"))
        assert [m.id for m in first.claim.outbound_messages] == [a1.id, b1.id]  # one per recipient

        # a2 heads its recipient only once a1 is sent: the acks of a message run before its claim.
        second = await exchange(stream, work("egress-1", sent=[a1.id, b1.id]))
        assert list(second.claim.refused_ids) == []
        assert [m.id for m in second.claim.outbound_messages] == [a2.id]

        last = await exchange(stream, work("egress-1", sent=[a2.id]))
        assert list(last.claim.outbound_messages) == [] and list(last.claim.refused_ids) == []
        await stream.done_writing()
        assert await asyncio.wait_for(stream.read(), 10) is grpc.aio.EOF
        assert await stream.code() == grpc.StatusCode.OK
    finally:
        stream.cancel()
    assert [(row(delivery, m.id)["status"], row(delivery, m.id)["processor_id"]) for m in (a1, b1, a2)] == [
        ("sent", None)
    ] * 3


async def test_a_sender_without_the_lease_gets_nothing_and_its_acks_are_refused(delivery: Running) -> None:
    await hold_lease(delivery, "egress-1")
    held = await enqueue(delivery, to="5511900000001")
    stream = delivery.stub.WorkOutbound(metadata=service())
    try:
        claimed = await exchange(stream, work("egress-1", max_messages=1))
        assert [m.id for m in claimed.claim.outbound_messages] == [held.id]
        await enqueue(delivery, to="5511900000002")
        stranger = await exchange(stream, work("egress-2", sent=[held.id]))
    finally:
        stream.cancel()
    assert list(stranger.claim.refused_ids) == [held.id]
    assert list(stranger.claim.outbound_messages) == []
    assert (row(delivery, held.id)["status"], row(delivery, held.id)["processor_id"]) == ("processing", "egress-1")


@pytest.mark.parametrize(
    ("metadata", "code"),
    [((), grpc.StatusCode.UNAUTHENTICATED), ((("x-service-key", "wrong"),), grpc.StatusCode.PERMISSION_DENIED)],
)
async def test_the_stream_needs_the_service_key(
    delivery: Running, metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode
) -> None:
    await hold_lease(delivery, "egress-1")
    queued = await enqueue(delivery)
    stream = delivery.stub.WorkOutbound(metadata=metadata)
    try:
        refused = await refusal(stream, work("egress-1"), 10)
    finally:
        stream.cancel()
    assert refused.code() == code
    assert row(delivery, queued.id)["status"] == "pending"


async def test_a_bad_message_ends_the_stream_naming_the_field(delivery: Running) -> None:
    await hold_lease(delivery, "egress-1")
    stream = delivery.stub.WorkOutbound(metadata=service())
    try:
        ok = await exchange(stream, work("egress-1"))
        assert list(ok.claim.outbound_messages) == []
        await stream.write(work("egress-1", sent=[ids.OUTBOUND.format(ids.OUTBOUND.new()) for _ in range(101)]))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await asyncio.wait_for(stream.read(), 10)
    finally:
        stream.cancel()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(refused.value) == ["completed_ids"]
