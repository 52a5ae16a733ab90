"""Phone verification end to end across three real services: the code requested on identity
travels through the outbox to messages (conversation + system message) and delivery
(outbound row for the configured WhatsApp account), where the egress runtime claims it; the
code it sends then confirms the phone (docs/hardening.md #10 and #27)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from services.delivery.app import build_server as build_delivery
from services.identity.app import build_server as build_identity
from services.messages.app import build_server as build_messages
from tests.support.builders import alice
from tests.support.database import TestDatabase
from tests.support.grpc_client import bearer, service
from tests.support.ports import free_port
from tests.support.streams import read_until
from zenthor.config import ServiceName
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2, delivery_pb2_grpc
from zenthor.gen.zenthor.identity.v1 import identity_pb2, identity_pb2_grpc
from zenthor.server import GrpcServer

ACCOUNT = "wa-main"
PHONE = "5511977776666"


@pytest.fixture
async def stack(settings_for: Any, db: TestDatabase) -> AsyncIterator[dict[ServiceName, grpc.aio.Channel]]:
    ports = {s: free_port() for s in (ServiceName.IDENTITY, ServiceName.MESSAGES, ServiceName.DELIVERY)}
    addrs = {f"{s.value}_addr": f"127.0.0.1:{p}" for s, p in ports.items()}
    builders = {ServiceName.IDENTITY: build_identity, ServiceName.MESSAGES: build_messages, ServiceName.DELIVERY: build_delivery}
    servers: list[GrpcServer] = []
    channels: dict[ServiceName, grpc.aio.Channel] = {}
    try:
        for name, build in builders.items():
            server = await build(settings_for(name, whatsapp_account_id=ACCOUNT, temporal_address="127.0.0.1:1", **addrs))
            await server.start(ports[name])
            servers.append(server)
            channels[name] = grpc.aio.insecure_channel(f"127.0.0.1:{ports[name]}")
        yield channels
    finally:
        for channel in channels.values():
            await channel.close()
        for server in reversed(servers):
            await server.stop(0)


async def test_the_code_reaches_a_whatsapp_egress_claim_for_the_configured_account(
    stack: dict[ServiceName, grpc.aio.Channel], db: TestDatabase, clerk_issuer: Any
) -> None:
    alice(db)
    identity = identity_pb2_grpc.IdentityServiceStub(stack[ServiceName.IDENTITY])
    delivery = delivery_pb2_grpc.DeliveryServiceStub(stack[ServiceName.DELIVERY])
    user = bearer(clerk_issuer.token("user_alice"))

    # The egress runtime watches its account before anything is queued: no polling.
    watch = delivery.WatchOutbound(
        delivery_pb2.WatchOutboundRequest(account_id=ACCOUNT, channel=types_pb2.CHANNEL_WHATSAPP), metadata=service()
    )
    await read_until(watch, lambda update: update.claimable_count == 0)
    reply = await identity.RequestPhoneVerification(identity_pb2.RequestPhoneVerificationRequest(phone=PHONE), metadata=user)
    assert reply.success
    await read_until(watch, lambda update: update.claimable_count > 0)
    watch.cancel()

    # The egress holds the account's lease first: only the holder claims (docs/hardening.md #41).
    await delivery.UpsertWhatsAppAccount(
        delivery_pb2.UpsertWhatsAppAccountRequest(account_id=ACCOUNT, phone=ACCOUNT, enabled=True), metadata=service()
    )
    lease = await delivery.AcquireLease(delivery_pb2.AcquireLeaseRequest(account_id=ACCOUNT, owner_id="egress-1"), metadata=service())
    assert lease.acquired
    claimed = await delivery.ClaimOutbound(
        delivery_pb2.ClaimOutboundRequest(account_id=ACCOUNT, processor_id="egress-1", channel=types_pb2.CHANNEL_WHATSAPP, max_messages=10),
        metadata=service(),
    )
    [outbound] = claimed.outbound_messages
    assert (outbound.to, outbound.account_id) == (PHONE, ACCOUNT)
    assert outbound.payload.metadata.kind == "phone_verification"
    code = re.fullmatch(r"Your verification code is: (\d{6})\n\nThis code expires in 5 minutes\.", outbound.payload.content).group(1)  # type: ignore[union-attr]

    # The system message sits in the contact's WhatsApp conversation.
    [(channel, role, content)] = db.sql("SELECT channel, role, content FROM messages.messages")
    assert (channel, role, content) == ("whatsapp", "system", outbound.payload.content)
    assert db.sql("SELECT channel FROM messages.conversations") == [("whatsapp",)]

    confirmed = await identity.ConfirmPhoneVerification(identity_pb2.ConfirmPhoneVerificationRequest(code=code), metadata=user)
    assert (confirmed.success, confirmed.phone) == (True, PHONE)
