"""`message.created` webhook events (docs/webhooks.md): written to the messages outbox in the
transaction of the message for user messages and final assistant replies, never for streaming
placeholders, their updates, failed placeholders or system messages; relayed to the real
delivery server, which fans them out to the owner's endpoint (a WhatsApp contact's events reach
the user it is linked to)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.delivery.app import build_server as build_delivery
from services.messages.app import build_server as build_messages
from tests.service.conftest import Running, start, stop
from tests.service.messages.conftest import People
from tests.support.database import TestDatabase
from tests.support.grpc_client import service
from tests.support.jwks import FakeClerkIssuer
from tests.support.messages_builders import web_conversation, whatsapp_conversation
from tests.support.waiting import eventually
from tests.support.webhook_builders import MESSAGE_CREATED, create_endpoint, deliveries
from zenthor.config import ServiceName
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2_grpc
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc

TOPIC = "delivery.publish_webhook_event"


def webhook_events(messages: Running) -> list[tuple[str, dict[str, Any]]]:
    rows = messages.db.sql("SELECT key, payload FROM messages.outbox WHERE topic = %s ORDER BY created_at", (TOPIC,))
    return [(str(k), dict(p)) for k, p in rows]


async def test_user_messages_and_final_replies_are_events_streaming_and_system_messages_are_not(
    messages: Running, people: People
) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    sent = (
        await messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=w1.id, content="hi"), metadata=people.alice)
    ).message
    placeholder = (
        await messages.stub.CreatePlaceholder(pb.CreatePlaceholderRequest(conversation_id=w1.id), metadata=service())
    ).message
    await messages.stub.UpdateStreamingContent(
        pb.UpdateStreamingContentRequest(message_id=placeholder.id, content="hel", sequence=1), metadata=service()
    )
    await messages.stub.CreateSystemMessage(
        pb.CreateSystemMessageRequest(conversation_id=w1.id, content="summary"), metadata=service()
    )
    assert [k for k, _ in webhook_events(messages)] == [f"message.created:{sent.id}"]
    await messages.stub.FinalizeMessage(
        pb.FinalizeMessageRequest(message_id=placeholder.id, content="hello"), metadata=service()
    )
    whole = (
        await messages.stub.CreateAssistantMessage(
            pb.CreateAssistantMessageRequest(conversation_id=w1.id, content="and more"), metadata=service()
        )
    ).message
    failed = (
        await messages.stub.CreatePlaceholder(pb.CreatePlaceholderRequest(conversation_id=w1.id), metadata=service())
    ).message
    await messages.stub.FailPlaceholder(pb.FailPlaceholderRequest(message_id=failed.id), metadata=service())

    events = webhook_events(messages)
    assert [k for k, _ in events] == [f"message.created:{m}" for m in (sent.id, placeholder.id, whole.id)]
    user_event, reply_event, _ = (p for _, p in events)
    assert user_event["type"] == "message.created" and user_event["owner_user_id"] == f"usr_{people.alice_id.hex}"
    assert user_event["data"] | {"create_time": None} == {
        "message_id": sent.id, "conversation_id": w1.id, "role": "user", "channel": "web", "content": "hi",
        "status": "sent", "create_time": None, "job_id": None,
    }
    assert (reply_event["data"]["role"], reply_event["data"]["content"]) == ("assistant", "hello")


@pytest.fixture
async def relayed(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, identity: Running
) -> AsyncIterator[tuple[Running, Running]]:
    """Messages whose outbox relay reaches a real delivery server (both on this test's database)."""
    identity_addr = f"127.0.0.1:{identity.server.port}"
    d_settings = settings_for(ServiceName.DELIVERY, identity_addr=identity_addr, temporal_address="127.0.0.1:1")
    delivery = await start(
        await build_delivery(d_settings), delivery_pb2_grpc.DeliveryServiceStub, d_settings, db, clerk_issuer
    )
    m_settings = settings_for(
        ServiceName.MESSAGES, identity_addr=identity_addr, delivery_addr=f"127.0.0.1:{delivery.server.port}",
        agent_queue_addr="127.0.0.1:1",
    )
    messages = await start(
        await build_messages(m_settings), messages_pb2_grpc.MessagesServiceStub, m_settings, db, clerk_issuer
    )
    yield messages, delivery
    await stop(messages)
    await stop(delivery)


async def test_the_relay_hands_the_event_to_delivery_which_fans_it_out_to_the_owner(
    relayed: tuple[Running, Running], people: People
) -> None:
    messages, delivery = relayed
    endpoint = (await create_endpoint(delivery, "user_alice", event_types=(MESSAGE_CREATED,))).endpoint
    await create_endpoint(delivery, "user_bob", event_types=(MESSAGE_CREATED,))
    w1 = await web_conversation(messages.stub, people.alice)
    sent = (
        await messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=w1.id, content="hi"), metadata=people.alice)
    ).message
    # Alice's WhatsApp side (contact K1, linked to her): its events are hers too.
    wa1 = await whatsapp_conversation(messages.stub, people.k1_id)
    inbound = (
        await messages.stub.SendMessageAsService(pb.SendMessageAsServiceRequest(conversation_id=wa1.id, content="oi"), metadata=service())
    ).message
    await eventually(lambda: len(deliveries(delivery)) == 2)
    rows = deliveries(delivery)
    assert sorted(r["event_id"] for r in rows) == sorted(f"message.created:{m.id}" for m in (sent, inbound))
    assert {f"whe_{r['endpoint_id'].hex}" for r in rows} == {endpoint.id}
