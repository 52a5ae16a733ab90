"""A WhatsApp egress sender process for the killed-sender scenario, shaped like the runtime's:
hold the account lease (AcquireLease), claim outbound messages (ClaimOutbound), send each, then
acknowledge it (CompleteOutbound). The WhatsApp socket is a JSON line on stdout per send, which
the test reads as the recipient's phone would.

    python -m tests.support.egress_sender ADDR ACCOUNT_ID OWNER_ID HOLD HANG_AFTER

HOLD: claim until this many messages are held before sending (0: claim as they come, forever).
HANG_AFTER: after this many sends, stop before acknowledging the last one and wait to be killed
(0: never).
"""

from __future__ import annotations

import asyncio
import json
import sys

from google.protobuf.duration_pb2 import Duration

from tests.support.grpc_client import service
from zenthor.clients import open_channel
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2_grpc

CLAIM_BATCH = 100  # ClaimOutbound's largest batch
CLAIM_LEASE_S = 30  # the runtime's lockMs
ACCOUNT_LEASE_S = 45  # the runtime's WHATSAPP_LEASE_TTL_MS default
IDLE_PAUSE_S = 0.05


def say(**values: object) -> None:
    print(json.dumps(values), flush=True)


def seconds(value: int) -> Duration:
    duration = Duration()
    duration.FromSeconds(value)
    return duration


async def acquire_lease(stub: delivery_pb2_grpc.DeliveryServiceStub, account_id: str, owner_id: str) -> None:
    """Like the runtime: try until acquired."""
    while True:
        reply = await stub.AcquireLease(
            pb.AcquireLeaseRequest(account_id=account_id, owner_id=owner_id, ttl=seconds(ACCOUNT_LEASE_S)), metadata=service()
        )
        if reply.acquired:
            say(lease=owner_id)
            return
        await asyncio.sleep(IDLE_PAUSE_S)


async def claim(stub: delivery_pb2_grpc.DeliveryServiceStub, account_id: str, owner_id: str, most: int) -> list[pb.OutboundMessage]:
    reply = await stub.ClaimOutbound(
        pb.ClaimOutboundRequest(
            account_id=account_id, processor_id=owner_id, channel=types_pb2.CHANNEL_WHATSAPP,
            max_messages=min(most, CLAIM_BATCH), lease=seconds(CLAIM_LEASE_S),
        ),
        metadata=service(),
    )
    return list(reply.outbound_messages)


async def main(addr: str, account_id: str, owner_id: str, hold: int, hang_after: int) -> None:
    async with open_channel(addr, None, deadline_s=10.0) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        await acquire_lease(stub, account_id, owner_id)
        sent = 0
        while True:
            held: list[pb.OutboundMessage] = []
            while True:
                batch = await claim(stub, account_id, owner_id, hold - len(held) if hold else CLAIM_BATCH)
                held += batch
                if not batch or not hold or len(held) >= hold:
                    break
            if hold:
                say(holding=len(held))
            if not held:
                await asyncio.sleep(IDLE_PAUSE_S)
                continue
            for message in held:
                say(sent=message.id, to=message.to, content=message.payload.content)
                sent += 1
                if sent == hang_after:
                    say(hanging_before_ack=message.id)
                    await asyncio.Event().wait()  # killed here: sent, never acknowledged
                await stub.CompleteOutbound(pb.CompleteOutboundRequest(id=message.id, processor_id=owner_id), metadata=service())
                say(acked=message.id)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
