"""docs/hardening.md #27: a delivered outbound message marks its `messages` row DELIVERED, a given-up one
FAILED, through the delivery outbox calling the real messages server; the conversation's owner
sees it on messages' live watch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.messages.app import build_server as build_messages
from tests.service.conftest import Running, start, stop
from tests.service.delivery.conftest import DeliveryFactory
from tests.support.builders import add_contact, alice
from tests.support.database import TestDatabase
from tests.support.delivery_builders import claim, enqueue, hold_lease
from tests.support.grpc_client import bearer, service
from tests.support.jwks import FakeClerkIssuer
from tests.support.streams import READ_TIMEOUT_S
from zenthor import ids
from zenthor.config import ServiceName
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2, messages_pb2_grpc

PHONE = "5511999990000"


@pytest.fixture
async def messages(settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, identity: Running) -> AsyncIterator[Running]:
    settings = settings_for(ServiceName.MESSAGES, identity_addr=f"127.0.0.1:{identity.server.port}")
    running = await start(await build_messages(settings), messages_pb2_grpc.MessagesServiceStub, settings, db, clerk_issuer)
    yield running
    await stop(running)


async def test_sent_and_failed_outbound_messages_mark_their_messages(
    messages: Running, delivery_factory: DeliveryFactory, db: TestDatabase, clerk_issuer: FakeClerkIssuer
) -> None:
    delivery = await delivery_factory(messages_addr=f"127.0.0.1:{messages.server.port}", build={"outbox_poll_s": 0.05})
    k1 = add_contact(db, PHONE, user_id=alice(db))
    conversation = (
        await messages.stub.GetOrCreateConversation(
            messages_pb2.GetOrCreateConversationRequest(
                channel=types_pb2.CHANNEL_WHATSAPP, contact_id=ids.CONTACT.format(k1)
            ),
            metadata=service(),
        )
    ).conversation
    replies = []
    for text in ("Here is your answer", "And one more thing"):
        reply = await messages.stub.CreateAssistantMessage(
            messages_pb2.CreateAssistantMessageRequest(conversation_id=conversation.id, content=text), metadata=service()
        )
        replies.append(reply.message)
    # Alice (K1's user) watches the conversation live, as the web UI does.
    watch = messages.stub.WatchConversation(
        messages_pb2.WatchConversationRequest(conversation_id=conversation.id),
        metadata=bearer(clerk_issuer.token("user_alice")),
    )
    status: dict[str, int] = {}
    async with asyncio.timeout(READ_TIMEOUT_S):
        async for update in watch:
            status.update({m.id: m.status for m in update.messages})
            if update.caught_up:
                break

    conversation_id = ids.CONVERSATION.parse(conversation.id, "conversation_id")
    outbound = [
        await enqueue(delivery, to=PHONE, conversation_id=conversation_id, message_id=ids.MESSAGE.parse(m.id, "id"))
        for m in replies
    ]
    await hold_lease(delivery, "wa1")
    (first,) = await claim(delivery, "wa1")
    await delivery.stub.CompleteOutbound(pb.CompleteOutboundRequest(id=first.id, processor_id="wa1"), metadata=service())
    (second,) = await claim(delivery, "wa1")
    assert [first.id, second.id] == [o.id for o in outbound]
    await delivery.stub.FailOutbound(
        pb.FailOutboundRequest(id=second.id, processor_id="wa1", error="number not on WhatsApp", retry=False),
        metadata=service(),
    )

    wanted = {replies[0].id: messages_pb2.MESSAGE_STATUS_DELIVERED, replies[1].id: messages_pb2.MESSAGE_STATUS_FAILED}
    async with asyncio.timeout(30):  # the outbox relay delivers right after each commit
        async for update in watch:
            status.update({m.id: m.status for m in update.messages})
            if all(status.get(k) == v for k, v in wanted.items()):
                break
    watch.cancel()
    assert db.sql(
        "SELECT content, status FROM messages.messages ORDER BY created_at, id"
    ) == [("Here is your answer", "delivered"), ("And one more thing", "failed")]
